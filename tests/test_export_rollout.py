"""`rmx export`: a scored rollout as HTML (checked in headless Chromium), SVG, LaTeX and JSON; bad input."""

from __future__ import annotations

import json
import math
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.test_cli_score import run_cli

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
COMPLETION = " 2+3 = 5, so the answer is \\boxed{5}.\nDone & <ok> 100% $x_1$"


@pytest.fixture(scope="module")
def weak_adapter(tiny_root, tiny_llama):
    from tests.tiny import build_adapter

    return build_adapter(tiny_root / "export-weak", tiny_llama, seed=1, scale=0.05)


@pytest.fixture(scope="module")
def exported(tiny_llama, weak_adapter, tmp_path_factory) -> Path:
    """What the workbench's X key writes for a fork: a real scored rollout, problem, and who chose each token."""
    from engine.core.config import ModelSpec
    from engine.core.models import load_pair
    from engine.core.prompts import completion_ids, prompt_ids
    from engine.core.scoring import score

    base, teacher = load_pair(ModelSpec(str(tiny_llama), dtype="float32"),
                              ModelSpec(str(tiny_llama), adapter=str(weak_adapter), dtype="float32"))
    prompt = prompt_ids(base.tokenizer, "What is 2+3?", "raw")
    rollout = score(base, [(prompt, completion_ids(base.tokenizer, COMPLETION))], teacher)[0]
    tokens = [token.to_json() for token in rollout.tokens]
    sources = ["base"] * len(tokens)
    sources[3] = "forced"
    data = {"problem": {"id": "smoke_0", "problem": "What is 2+3? <b>bold?</b>", "answer": "5", "source": "smoke"},
            "key": "0.1", "label": "@3 ' ='→' ='", "parent": "0", "fork_pos": 3, "state": "done", "end": "eos",
            "error": None, "scored": True, "answer": "5", "correct": True, "grade_reason": "match",
            "prompt_ids": list(prompt), "completion_ids": [t["id"] for t in tokens], "sources": sources,
            "tokens": tokens}
    path = tmp_path_factory.mktemp("export") / "rmx-0.1.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def _tokens(path: Path) -> list[dict]:
    return json.loads(path.read_text())["tokens"]


def test_html_renders_every_token_and_its_hover_in_chromium(exported, tmp_path, capsys, monkeypatch):
    if CHROMIUM is None:
        pytest.skip("no chromium on this machine (.ci/run installs Debian's chromium before the tests)")
    from playwright.sync_api import sync_playwright

    out = tmp_path / "page.html"
    code, _, err = run_cli(["export", str(exported), "--format", "html", "--out", str(out)], capsys, monkeypatch)
    assert code == 0, err
    html = out.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # self-contained: nothing to fetch
    tokens = _tokens(exported)
    marked = next(i for i, t in enumerate(tokens) if t["class"] in ("reranked", "shifted"))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(out.as_uri())
            spans = page.locator(".rollout .tok")
            assert spans.count() == len(tokens)
            shown = page.locator(".rollout").inner_text().replace("⏎", "")
            assert shown == "".join(t["text"] for t in tokens)
            assert "Done & <ok> 100% $x_1$" in shown  # escaped as text, not eaten as markup
            assert page.locator("b").count() == 0
            tip = page.locator("#tip")
            assert not tip.is_visible()
            spans.nth(marked).hover()
            assert tip.is_visible()
            hover = tip.inner_text().splitlines()
            top = tokens[marked]["top"]
            from rmx_tui.figures.marks import printable

            assert len(top) == 5 and hover[1:6] == [f"'{printable(alt['text'])}'  {math.exp(alt['logprob']):.3f}"
                                                    for alt in top]
            assert any(line.startswith("teacher → ") for line in hover)
            assert "forced" in spans.nth(3).get_attribute("class")
            spans.nth(3).hover()
            assert "chosen by: forced" in tip.inner_text()
            colour = spans.nth(0).evaluate("e => getComputedStyle(e).backgroundColor")
            from themes.palettes import PALETTES, Heatmap

            expected = Heatmap(PALETTES["viridis"]).colour(tokens[0]["entropy"])
            assert colour == "rgb({}, {}, {})".format(*(int(expected[i:i + 2], 16) for i in (1, 3, 5)))
            assert page.locator(".legend .stop").count() == len(PALETTES["viridis"])
        finally:
            browser.close()


def test_svg_is_valid_xml_with_one_box_per_token_of_the_span(exported, tmp_path, capsys, monkeypatch):
    out = tmp_path / "fig.svg"
    code, stdout, err = run_cli(["export", str(exported), "--format", "svg", "--out", str(out), "--start", "2",
                                 "--end", "9"], capsys, monkeypatch)
    assert code == 0, err and "7 tokens" in stdout
    root = ET.fromstring(out.read_text())
    ns = "{http://www.w3.org/2000/svg}"
    groups = root.findall(f"{ns}g")
    assert len(groups) == 7
    titles = [g.find(f"{ns}title").text for g in groups]
    assert titles[0].startswith("#2 ") and titles[-1].startswith("#8 ")
    assert any(g.find(f"{ns}rect").get("stroke") for g in groups)  # the forced token at 3 is framed


def test_tex_has_a_colorbox_per_token_and_escapes_tex(exported, tmp_path, capsys, monkeypatch):
    out = tmp_path / "snippet.tex"
    code, _, err = run_cli(["export", str(exported), "--format", "tex", "--out", str(out)], capsys, monkeypatch)
    assert code == 0, err
    tex = out.read_text()
    body = tex.split("% legend")[0]
    tokens = _tokens(exported)
    pieces = sum(1 if "\n" not in t["text"] else len([p for p in t["text"].split("\n") if p]) for t in tokens)
    assert body.count(r"\colorbox[HTML]") == pieces
    assert all(escaped in body for escaped in (r"\$", r"\_", r"\&", r"\%", "\\newline"))
    unescaped = body.replace(r"\{", "").replace(r"\}", "")
    assert unescaped.count("{") == unescaped.count("}")


def test_json_keeps_tokens_and_sources(exported, tmp_path, capsys, monkeypatch):
    out = tmp_path / "again.json"
    code, _, err = run_cli(["export", str(exported), "--format", "json", "--out", str(out)], capsys, monkeypatch)
    assert code == 0, err
    data = json.loads(out.read_text())
    assert data["tokens"] == _tokens(exported) and data["sources"][3] == "forced" and data["correct"] is True


def test_rmx_score_json_is_a_rollout_too(tiny_llama, tmp_path, capsys, monkeypatch):
    code, out, err = run_cli(["score", "--base", str(tiny_llama), "--prompt-text", "2+3?", "--completion-text", " 5",
                              "--json"], capsys, monkeypatch)
    assert code == 0, err
    scored = tmp_path / "scored.json"
    scored.write_text(out)
    code, stdout, err = run_cli(["export", str(scored), "--format", "html"], capsys, monkeypatch)
    assert code == 0, err and (tmp_path / "scored.html").exists()


def test_an_existing_file_is_kept_without_force(exported, tmp_path, capsys, monkeypatch):
    out = tmp_path / "keep.html"
    out.write_text("precious")
    code, _, err = run_cli(["export", str(exported), "--out", str(out)], capsys, monkeypatch)
    assert code == 2 and "--force" in err and out.read_text() == "precious"
    code, _, err = run_cli(["export", str(exported), "--out", str(out), "--force"], capsys, monkeypatch)
    assert code == 0 and out.read_text().startswith("<!doctype html>")


@pytest.mark.parametrize("content, message", [
    (None, "not found"),
    ("{not json", "not a JSON rollout export"),
    ('{"tokens": []}', "not a rollout export"),
    ('{"tokens": [{"pos": 0}]}', "malformed token"),
    ('[1, 2]', "not a rollout export"),
])
def test_a_missing_or_malformed_rollout_is_one_line_naming_it(tmp_path, capsys, monkeypatch, content, message):
    path = tmp_path / "roll.json"
    if content is not None:
        path.write_text(content)
    code, _, err = run_cli(["export", str(path), "--format", "svg"], capsys, monkeypatch)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert str(path) in err and message in err


def test_bad_options_are_one_line(exported, tmp_path, capsys, monkeypatch):
    code, _, err = run_cli(["export", str(exported), "--format", "pdf"], capsys, monkeypatch)
    assert code == 2 and "--format" in err
    code, _, err = run_cli(["export", str(exported), "--start", "5", "--end", "500", "--out", str(tmp_path / "x.svg"),
                            "--format", "svg"], capsys, monkeypatch)
    assert code == 2 and "outside" in err


@pytest.fixture(scope="module")
def compared(exported, tmp_path_factory) -> Path:
    """What X writes on a fork: the parent (all base tokens, right) and a branch forced at 3 (shorter, wrong)."""
    branch = json.loads(exported.read_text())
    parent = dict(branch, key="0", label="greedy", parent=None, fork_pos=None, sources=["base"] * len(branch["tokens"]))
    tokens = [dict(t) for t in branch["tokens"][:3] + branch["tokens"][5:]]
    for pos, token in enumerate(tokens):
        token["pos"] = pos
    branch.update(tokens=tokens, sources=["base"] * 3 + ["forced"] + ["base"] * (len(tokens) - 4),
                  completion_ids=[t["id"] for t in tokens], answer="6", correct=False)
    path = tmp_path_factory.mktemp("compare") / "rmx-0.1-vs-parent.json"
    path.write_text(json.dumps({"kind": "comparison", "fork_pos": 3, "parent": parent, "branch": branch}))
    return path


def _sides(path: Path) -> tuple[list[dict], list[dict]]:
    data = json.loads(path.read_text())
    return data["parent"]["tokens"], data["branch"]["tokens"]


def test_a_branch_comparison_renders_both_sides_from_the_fork_in_chromium(compared, tmp_path, capsys, monkeypatch):
    if CHROMIUM is None:
        pytest.skip("no chromium on this machine (.ci/run installs Debian's chromium before the tests)")
    from playwright.sync_api import sync_playwright

    out = tmp_path / "fork.html"
    code, stdout, err = run_cli(["export", str(compared), "--format", "html", "--out", str(out)], capsys, monkeypatch)
    assert code == 0, err
    assert "fork at token 3" in stdout
    html = out.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)
    parent, branch = _sides(compared)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(out.as_uri())
            assert page.locator(".prefix .tok").count() == 3
            left, right = page.locator("#parent .rollout .tok"), page.locator("#branch .rollout .tok")
            assert left.count() == len(parent) - 3 and right.count() == len(branch) - 3
            # Aligned: both columns start at the fork position, side by side on one row.
            assert left.nth(0).get_attribute("data-pos") == right.nth(0).get_attribute("data-pos") == "3"
            assert abs(left.nth(0).bounding_box()["y"] - right.nth(0).bounding_box()["y"]) < 2
            assert left.nth(0).bounding_box()["x"] < right.nth(0).bounding_box()["x"]
            assert "src-forced" in right.nth(0).get_attribute("class")
            assert "src-forced" not in left.nth(0).get_attribute("class")
            assert page.locator("#parent .verdict").inner_text() == "answer: 5 ✓ correct"
            assert page.locator("#branch .verdict").inner_text() == "answer: 6 ✗ wrong"
            shown = page.locator("#branch .rollout").inner_text().replace("⏎", "")
            assert shown == "".join(t["text"] for t in branch[3:])
            right.nth(0).hover()
            tip = page.locator("#tip")
            assert tip.is_visible() and "chosen by: forced" in tip.inner_text()
            assert tip.inner_text().splitlines()[0].startswith("#3 ")
        finally:
            browser.close()


def test_a_branch_comparison_as_svg_tex_and_json(compared, tmp_path, capsys, monkeypatch):
    parent, branch = _sides(compared)
    out = tmp_path / "fork.svg"
    code, _, err = run_cli(["export", str(compared), "--format", "svg", "--out", str(out)], capsys, monkeypatch)
    assert code == 0, err
    ns = "{http://www.w3.org/2000/svg}"
    columns = ET.fromstring(out.read_text()).findall(f"{ns}svg")
    assert [len(column.findall(f"{ns}g")) for column in columns] == [len(parent) - 3, len(branch) - 3]
    assert not columns[0].find(f"{ns}g").find(f"{ns}rect").get("stroke")
    assert columns[1].find(f"{ns}g").find(f"{ns}rect").get("stroke")  # the forced token is framed
    out = tmp_path / "fork.tex"
    code, _, err = run_cli(["export", str(compared), "--format", "tex", "--out", str(out)], capsys, monkeypatch)
    assert code == 0, err
    tex = out.read_text()
    assert "answer: 5 ✓ correct" in tex and "answer: 6 ✗ wrong" in tex
    assert tex.count(r"\fcolorbox[HTML]{E8175D}") == 1
    out = tmp_path / "again.json"
    code, _, err = run_cli(["export", str(compared), "--format", "json", "--out", str(out)], capsys, monkeypatch)
    assert code == 0, err
    data = json.loads(out.read_text())
    assert data["fork_pos"] == 3 and data["branch"]["tokens"] == branch and data["parent"]["tokens"] == parent
    code, _, err = run_cli(["export", str(compared), "--format", "json", "--out", str(out)], capsys, monkeypatch)
    assert code == 2 and "--force" in err


@pytest.mark.parametrize("change, message", [
    ({"fork_pos": None}, "fork_pos"),
    ({"fork_pos": 999}, "past the parent"),
    ({"branch": None}, "'branch'"),
    ({"parent": {"tokens": []}}, "(parent): not a rollout export"),
])
def test_a_malformed_comparison_is_one_line_naming_it(compared, tmp_path, capsys, monkeypatch, change, message):
    data = json.loads(compared.read_text())
    data.update(change)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    code, _, err = run_cli(["export", str(path), "--format", "html"], capsys, monkeypatch)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert str(path) in err and message in err
    assert not (tmp_path / "bad.html").exists()
    code, _, err = run_cli(["export", str(compared), "--start", "1", "--out", str(tmp_path / "s.svg")], capsys,
                           monkeypatch)
    assert code == 2 and "comparison" in err
