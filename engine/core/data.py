"""Bundled math benchmarks and user problem files, read into Problem records."""

from __future__ import annotations

import json
import numbers
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from engine.core.errors import RmxError

# name -> file in engine/data/; a file's first name is its canonical one, later ones are aliases.
BUNDLED: dict[str, str] = {
    "math500": "math500.jsonl",
    "gsm8k": "gsm8k_test.jsonl",
    "gsm8k_test": "gsm8k_test.jsonl",
    "gsm8k_train": "gsm8k_train.jsonl",
    "gsm8k_train_pool_500": "gsm8k_train_pool_500.jsonl",
    "aime24": "aime24.jsonl",
    "amc23": "amc23.jsonl",
    "minerva": "minerva_math.jsonl",
    "minerva_math": "minerva_math.jsonl",
    "olympiadbench": "olympiadbench.jsonl",
    "math_train": "math_train.jsonl",
    "math_train_pool_500": "math_train_pool_500.jsonl",
    "math_train_pool_150": "math_train_pool_150.jsonl",
    "smoke": "smoke.jsonl",
}

_DESCRIPTIONS: dict[str, str] = {
    "math500.jsonl": "MATH-500: the PRM800K test subset of MATH, levels 1-5, LaTeX answers",
    "gsm8k_test.jsonl": "GSM8K test split: grade-school word problems, integer answers",
    "gsm8k_train.jsonl": "GSM8K train split",
    "gsm8k_train_pool_500.jsonl": "500 GSM8K train problems, random.Random(0) sample",
    "aime24.jsonl": "AIME 2024: 30 problems, integer answers 0-999",
    "amc23.jsonl": "AMC 2023: 40 problems, integer answers",
    "minerva_math.jsonl": "Minerva Math: MIT OCW science/engineering problems, mixed answers",
    "olympiadbench.jsonl": "OlympiadBench: English text-only open-ended competition math",
    "math_train.jsonl": "MATH train split (7498 problems with a boxed answer)",
    "math_train_pool_500.jsonl": "500 MATH train problems, 100 per level, level-interleaved",
    "math_train_pool_150.jsonl": "first 150 of math_train_pool_500: 30 per level",
    "smoke.jsonl": "20 one-step arithmetic problems for quick end-to-end checks",
}

_USER_SUFFIXES = (".jsonl", ".json")
_HF_PREFIX = "hf:"
_HF_DEFAULT_SPLIT = "test"

RowStream = Iterator[tuple[str, object, str]]  # (where, row, default id) per row


class _FrozenDict(dict):
    """A dict that refuses changes, so a Problem's meta cannot drift after loading.

    A dict subclass rather than MappingProxyType: it still pickles, deep-copies and goes
    through dataclasses.asdict() and json.dumps() like the plain dict it was read as.
    """

    def _refuse(self, *args: object, **kwargs: object) -> None:
        raise TypeError("Problem.meta is read-only")

    __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse

    def __reduce__(self) -> tuple[type, tuple[dict]]:
        # pickle's default for dict subclasses refills via __setitem__, which is refused.
        return _FrozenDict, (dict(self),)


@dataclass(frozen=True)
class Problem:
    """One problem: its text, gold answer, where it came from, and the row's other fields."""

    id: str
    problem: str
    answer: str
    source: str  # bundled dataset name, file path or hf:<dataset>[:split]
    # Left out of the hash: HF rows may carry unhashable values (images, arrays).
    meta: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "meta", _freeze(self.meta))


@dataclass(frozen=True)
class _Fields:
    problem: str
    answer: str
    id: str


def list_datasets() -> list[dict]:
    """One entry per bundled file: name, rows, file, description and aliases."""
    return [
        {
            "name": names[0],
            "rows": _count_rows(_bundled_file(filename)),
            "file": filename,
            "description": _DESCRIPTIONS[filename],
            "aliases": names[1:],
        }
        for filename, names in _names_by_file().items()
    ]


def load_problems(
    source: str,
    *,
    problem_field: str = "problem",
    answer_field: str = "answer",
    id_field: str = "id",
    limit: int | None = None,
    offset: int = 0,
) -> list[Problem]:
    """Problems from a bundled name, a .jsonl/.json path or hf:<dataset>[:split].

    Every row is checked before slicing, so a broken row is reported wherever it is.
    A row without an id gets <file stem>_<line>; numeric answers become strings.
    """
    if offset < 0 or (limit is not None and limit < 0):
        raise RmxError(f"offset and limit must not be negative (offset={offset}, limit={limit})")
    fields = _Fields(problem_field, answer_field, id_field)
    label, rows = _open_source(source)
    problems: list[Problem] = []
    first_seen: dict[str, str] = {}
    for where, row, default_id in rows:
        problem = _to_problem(where, row, default_id, label, fields)
        if problem.id in first_seen:
            raise RmxError(
                f"{where}: duplicate id '{problem.id}' (first at {first_seen[problem.id]})"
            )
        first_seen[problem.id] = where
        problems.append(problem)
    if not problems:
        raise RmxError(f"{label} has no problems")
    end = None if limit is None else offset + limit
    return problems[offset:end]


def get_problem(source: str, index: int, **fields: str) -> Problem:
    """The problem at a 0-based index; fields are load_problems' *_field arguments."""
    problems = load_problems(source, **fields)
    if not 0 <= index < len(problems):
        raise RmxError(
            f"index {index} out of range: {problems[0].source} has {len(problems)} problems"
        )
    return problems[index]


def _open_source(source: str) -> tuple[str, RowStream]:
    """(label for Problem.source, rows) for any accepted source string."""
    if source in BUNDLED:
        filename = BUNDLED[source]
        return _names_by_file()[filename][0], _jsonl_rows(_bundled_file(filename))
    if source.startswith(_HF_PREFIX):
        return source, _hf_rows(source)
    path = Path(source).expanduser()
    if path.is_file():
        if path.suffix.lower() not in _USER_SUFFIXES:
            raise RmxError(
                f"{source}: unsupported file type '{path.suffix}': use a .jsonl or .json file"
            )
        return source, _json_rows(path) if path.suffix.lower() == ".json" else _jsonl_rows(path)
    if path.is_dir():
        raise RmxError(f"{source} is a directory: give a .jsonl or .json file")
    if path.suffix.lower() in _USER_SUFFIXES or "/" in source or "\\" in source:
        raise RmxError(f"no such file: {source}")
    names = ", ".join(names[0] for names in _names_by_file().values())
    raise RmxError(f"unknown dataset '{source}': use one of {names} or a path to a .jsonl file")


def _names_by_file() -> dict[str, list[str]]:
    names_by_file: dict[str, list[str]] = {}
    for name, filename in BUNDLED.items():
        names_by_file.setdefault(filename, []).append(name)
    return names_by_file


def _bundled_file(filename: str) -> Traversable:
    return resources.files("engine") / "data" / filename


def _count_rows(file: Traversable) -> int:
    with file.open("rb") as lines:
        return sum(1 for line in lines if line.strip())


def _jsonl_rows(file: Traversable | Path) -> RowStream:
    stem = Path(file.name).stem
    try:
        with file.open("r", encoding="utf-8") as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise RmxError(
                        f"{file}:{number}: invalid JSON ({exc.msg}, column {exc.colno})"
                    ) from exc
                yield f"{file}:{number}", row, f"{stem}_{number}"
    except UnicodeDecodeError as exc:
        raise RmxError(f"{file}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc


def _json_rows(path: Path) -> RowStream:
    """A .json file holding an array of objects; anything else is read as JSON Lines."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise RmxError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    if not text.lstrip().startswith("["):
        # Many tools write JSON Lines under a .json name.
        yield from _jsonl_rows(path)
        return
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RmxError(
            f"{path}:{exc.lineno}: invalid JSON ({exc.msg}, column {exc.colno})"
        ) from exc
    for index, row in enumerate(rows):
        yield f"{path}[{index}]", row, f"{path.stem}_{index}"


def _hf_rows(source: str) -> RowStream:
    dataset, _, split = source[len(_HF_PREFIX) :].partition(":")
    if not dataset:
        raise RmxError(f"'{source}' names no dataset: write hf:<dataset>[:split]")
    try:
        import datasets
    except ImportError as exc:
        raise RmxError(f"install the 'datasets' package to load {source}") from exc
    try:
        rows = datasets.load_dataset(dataset, split=split or _HF_DEFAULT_SPLIT)
    except Exception as exc:
        raise RmxError(f"cannot load {source}: {exc}") from exc
    stem = dataset.rsplit("/", 1)[-1]
    for index, row in enumerate(rows):
        yield f"{source}[{index}]", row, f"{stem}_{index}"


def _to_problem(where: str, row: object, default_id: str, label: str, fields: _Fields) -> Problem:
    if not isinstance(row, Mapping):
        raise RmxError(f"{where}: expected a JSON object, got {type(row).__name__}")
    raw_id = row.get(fields.id)
    return Problem(
        id=default_id if raw_id is None or raw_id == "" else str(raw_id),
        problem=_text(row, fields.problem, where),
        answer=_text(row, fields.answer, where),
        source=label,
        meta={
            key: value
            for key, value in row.items()
            if key not in (fields.problem, fields.answer, fields.id)
        },
    )


def _text(row: Mapping[str, Any], name: str, where: str) -> str:
    if name not in row:
        raise RmxError(f"{where}: missing field '{name}'")
    value = row[name]
    if isinstance(value, bool) or not isinstance(value, (str, numbers.Real)):
        kind = type(value).__name__
        raise RmxError(f"{where}: field '{name}' must be a string or number, not {kind}")
    if isinstance(value, numbers.Integral):
        text = str(int(value))
    elif isinstance(value, numbers.Real):
        # 27.0 -> "27", as the bundled AMC answers were written.
        number = float(value)
        text = str(int(number)) if number.is_integer() else str(number)
    else:
        text = value.strip()
    if not text:
        raise RmxError(f"{where}: field '{name}' is empty")
    return text


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return _FrozenDict({key: _freeze(item) for key, item in value.items()})
    if isinstance(value, list):
        return tuple(_freeze(item) for item in value)
    return value
