"""Tests for engine.core.data: bundled datasets, user files and their error messages."""

import copy
import dataclasses
import json
import pickle
import sys

import pytest

from engine.core.data import BUNDLED, Problem, get_problem, list_datasets, load_problems
from engine.core.errors import RmxError

EXPECTED_ROWS = {
    "math500": 500,
    "gsm8k": 1319,
    "gsm8k_test": 1319,
    "gsm8k_train": 7473,
    "gsm8k_train_pool_500": 500,
    "aime24": 30,
    "amc23": 40,
    "minerva": 272,
    "minerva_math": 272,
    "olympiadbench": 675,
    "math_train": 7498,
    "math_train_pool_500": 500,
    "math_train_pool_150": 150,
    "smoke": 20,
}


def write_lines(path, *lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


@pytest.mark.parametrize(("name", "rows"), EXPECTED_ROWS.items())
def test_every_bundled_name_loads_with_its_row_count(name, rows):
    problems = load_problems(name)
    assert len(problems) == rows
    assert len({p.id for p in problems}) == rows
    assert all(p.problem and p.answer for p in problems)


def test_bundled_names_are_exactly_the_documented_ones():
    assert set(BUNDLED) == set(EXPECTED_ROWS)


def test_aliases_load_the_same_file_under_the_canonical_name():
    assert load_problems("gsm8k_test", limit=3) == load_problems("gsm8k", limit=3)
    assert load_problems("minerva_math", limit=1)[0].source == "minerva"


def test_list_datasets_has_one_entry_per_file():
    listing = {entry["name"]: entry for entry in list_datasets()}
    assert set(listing) == {
        "math500", "gsm8k", "gsm8k_train", "gsm8k_train_pool_500", "aime24", "amc23",
        "minerva", "olympiadbench", "math_train", "math_train_pool_500",
        "math_train_pool_150", "smoke",
    }  # fmt: skip
    assert listing["gsm8k"]["aliases"] == ["gsm8k_test"]
    for name, entry in listing.items():
        assert entry["rows"] == EXPECTED_ROWS[name]
        assert entry["file"] == BUNDLED[name]
        assert entry["description"]


def test_bundled_problem_fields():
    problem = get_problem("math500", 0)
    assert problem.id == "test/precalculus/807.json"
    assert problem.source == "math500"
    assert problem.meta["level"] in range(1, 6)
    assert {"solution", "subject"} <= set(problem.meta)
    assert "answer" not in problem.meta and "id" not in problem.meta


def test_get_problem_out_of_range():
    assert get_problem("smoke", 19).id == "smoke_19"
    with pytest.raises(RmxError, match=r"^index 99 out of range: smoke has 20 problems$"):
        get_problem("smoke", 99)
    with pytest.raises(RmxError, match="index -1 out of range"):
        get_problem("smoke", -1)


def test_limit_and_offset():
    every = load_problems("smoke")
    assert load_problems("smoke", limit=5) == every[:5]
    assert load_problems("smoke", offset=18) == every[18:]
    assert load_problems("smoke", offset=3, limit=2) == every[3:5]
    assert load_problems("smoke", offset=25) == []
    with pytest.raises(RmxError, match="must not be negative"):
        load_problems("smoke", limit=-1)


def test_unknown_name_lists_the_choices():
    with pytest.raises(RmxError) as caught:
        load_problems("foo")
    message = str(caught.value)
    assert message.startswith("unknown dataset 'foo': use one of math500, gsm8k, ")
    assert message.endswith("or a path to a .jsonl file")
    assert "smoke" in message


def test_missing_file(tmp_path):
    with pytest.raises(RmxError, match="^no such file: .*nope.jsonl$"):
        load_problems(str(tmp_path / "nope.jsonl"))


def test_user_jsonl_with_blank_lines_numbers_and_missing_ids(tmp_path):
    path = write_lines(
        tmp_path / "mine.jsonl",
        '{"problem": "1+1?", "answer": 2, "level": 1}',
        "",
        "   ",
        '{"id": "q7", "problem": "half?", "answer": 0.5, "tags": ["a", "b"]}',
        '{"problem": "27?", "answer": 27.0}',
    )
    problems = load_problems(path)
    assert [(p.id, p.answer) for p in problems] == [
        ("mine_1", "2"),
        ("q7", "0.5"),
        ("mine_5", "27"),
    ]
    assert problems[0].source == path
    assert problems[0].meta == {"level": 1}
    assert problems[1].meta["tags"] == ("a", "b")


def test_malformed_line_names_file_and_line(tmp_path):
    path = write_lines(
        tmp_path / "bad.jsonl", '{"problem": "p", "answer": "1"}', '{"problem": "p",'
    )
    with pytest.raises(RmxError, match=r"bad\.jsonl:2: invalid JSON \("):
        load_problems(path)


def test_missing_field_names_file_and_line(tmp_path):
    path = write_lines(
        tmp_path / "short.jsonl", '{"problem": "p", "answer": "1"}', "", '{"problem": "q"}'
    )
    with pytest.raises(RmxError, match=r"short\.jsonl:3: missing field 'answer'$"):
        load_problems(path)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ('{"problem": "p", "answer": ""}', "field 'answer' is empty"),
        (
            '{"problem": "p", "answer": null}',
            "field 'answer' must be a string or number, not NoneType",
        ),
        ('{"problem": "p", "answer": true}', "field 'answer' must be a string or number, not bool"),
        ('["p", "1"]', "expected a JSON object, got list"),
    ],
)
def test_unusable_rows_are_reported_not_skipped(tmp_path, row, message):
    path = write_lines(tmp_path / "rows.jsonl", row)
    with pytest.raises(RmxError, match=rf"rows\.jsonl:1: {message}$"):
        load_problems(path)


def test_duplicate_ids_are_an_error(tmp_path):
    path = write_lines(
        tmp_path / "dup.jsonl",
        '{"id": "a", "problem": "p", "answer": "1"}',
        '{"id": "a", "problem": "q", "answer": "2"}',
    )
    with pytest.raises(
        RmxError, match=r"dup\.jsonl:2: duplicate id 'a' \(first at .*dup\.jsonl:1\)"
    ):
        load_problems(path)


def test_empty_file_is_an_error(tmp_path):
    path = write_lines(tmp_path / "empty.jsonl", "", "  ")
    with pytest.raises(RmxError, match="empty.jsonl has no problems"):
        load_problems(path)


def test_custom_field_names(tmp_path):
    path = write_lines(
        tmp_path / "custom.jsonl",
        '{"uid": 11, "question": "How many?", "final": "7", "problem": "kept as meta"}',
    )
    problem = get_problem(path, 0, problem_field="question", answer_field="final", id_field="uid")
    assert (problem.id, problem.problem, problem.answer) == ("11", "How many?", "7")
    assert problem.meta == {"problem": "kept as meta"}
    with pytest.raises(RmxError, match="missing field 'question'"):
        load_problems(
            write_lines(tmp_path / "plain.jsonl", '{"problem": "p", "answer": "1"}'),
            problem_field="question",
        )


def test_json_array_file(tmp_path):
    path = tmp_path / "set.json"
    path.write_text(json.dumps([{"problem": "a", "answer": 1}, {"problem": "b"}]), encoding="utf-8")
    with pytest.raises(RmxError, match=r"set\.json\[1\]: missing field 'answer'"):
        load_problems(str(path))
    path.write_text('[{"problem": "a", "answer": 1},\n {"problem": }]', encoding="utf-8")
    with pytest.raises(RmxError, match=r"set\.json:2: invalid JSON"):
        load_problems(str(path))
    path.write_text(json.dumps([{"problem": "a", "answer": 1}]), encoding="utf-8")
    assert load_problems(str(path))[0].id == "set_0"


def test_unsupported_file_type(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("problem,answer\n", encoding="utf-8")
    with pytest.raises(RmxError, match="unsupported file type '.csv'"):
        load_problems(str(path))


def test_hf_source_without_datasets_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(RmxError, match=r"^install the 'datasets' package to load hf:org/set:test$"):
        load_problems("hf:org/set:test")


def test_hf_source_reads_rows(monkeypatch):
    calls, rows = [], [{"question": "q0", "answer": 3}, {"question": "q1"}]

    class FakeDatasets:
        @staticmethod
        def load_dataset(name, split):
            calls.append((name, split))
            return rows

    monkeypatch.setitem(sys.modules, "datasets", FakeDatasets)
    with pytest.raises(RmxError, match=r"^hf:org/set\[1\]: missing field 'answer'$"):
        load_problems("hf:org/set", problem_field="question")
    rows[1]["answer"] = "4"
    problems = load_problems("hf:org/set:train", problem_field="question")
    assert calls == [("org/set", "test"), ("org/set", "train")]
    assert [(p.id, p.answer, p.source) for p in problems] == [
        ("set_0", "3", "hf:org/set:train"),
        ("set_1", "4", "hf:org/set:train"),
    ]


def test_problem_is_frozen_hashable_and_serialisable():
    problem = get_problem("olympiadbench", 0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        problem.answer = "x"
    with pytest.raises(TypeError, match="read-only"):
        problem.meta["level"] = 3
    assert isinstance(problem.meta["final_answer"], tuple)
    assert hash(problem) == hash(copy.deepcopy(problem))
    assert pickle.loads(pickle.dumps(problem)) == problem
    assert json.loads(json.dumps(dataclasses.asdict(problem)))["id"] == problem.id
    assert Problem("a", "p", "1", "s", {"k": [1]}).meta == {"k": (1,)}
