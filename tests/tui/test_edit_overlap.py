"""The compare view's edit overlap: the teacher's and an adapter's argmax edits on the base's greedy rollout."""

from __future__ import annotations

import pytest
from textual.widgets import Input

from engine.core.config import ModelSpec
from engine.core.decode import SamplingSpec
from engine.service.workbench import Workbench
from rmx_tui.screens.compare import CompareScreen
from rmx_tui.widgets.edit_overlap import EditOverlap
from tests.tui.harness import SIZE, rollout_ready, until


def expected_kinds(specs, adapter, prompt, max_new):
    """Each model asked on its own: greedy base ids, then who picks another token than the base there."""
    base_spec, teacher_spec = specs
    engine = Workbench()
    engine.load(base_spec, teacher_spec)
    ids = [step.id for step in engine.decode(prompt, SamplingSpec(greedy=True, max_new_tokens=max_new))]
    by_teacher = engine.score(prompt, ids, top_k=1).tokens
    engine.load(base_spec, ModelSpec(base_spec.source, adapter=str(adapter), dtype="float32", device="cpu"))
    by_adapter = engine.score(prompt, ids, top_k=1).tokens
    kinds = []
    for token, t, a in zip(ids, by_teacher, by_adapter):
        teacher, other = t.teacher.id != token, a.teacher.id != token
        kinds.append("both" if teacher and other else "teacher" if teacher else "adapter" if other else None)
    return ids, kinds


@pytest.mark.anyio
async def test_the_overlap_marks_each_models_edits_and_the_keys_walk_them(make_app, specs, overlap_adapter):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await rollout_ready(pilot)
        root = app.screen.active
        await pilot.press("t")
        await pilot.pause()
        compare = app.screen
        assert isinstance(compare, CompareScreen)
        overlap = compare.query_one(EditOverlap)
        await pilot.press("1")
        await pilot.pause()
        assert overlap.cursor is None  # nothing to walk before an adapter is picked
        await pilot.press("a")
        await pilot.pause()
        field = app.screen.query_one("#adapter", Input)
        field.value = str(overlap_adapter)
        await pilot.press("enter")
        await until(pilot, lambda: overlap.edits is not None)
        edits = overlap.edits
        ids, kinds = expected_kinds(specs, overlap_adapter, root.prompt_ids, app.settings.sampling.max_new_tokens)
        assert list(edits.ids) == ids
        assert list(edits.kinds) == kinds
        assert {"teacher", "both"} & set(kinds), "the fixture should make the teacher edit somewhere"
        for key, kind in (("1", "teacher"), ("2", "adapter"), ("3", "both")):
            where = [pos for pos, k in enumerate(kinds) if k == kind]
            overlap.cursor = None
            landed = []
            for _ in range(len(where) + 1):
                await pilot.press(key)
                landed.append(overlap.cursor)
            # Every edit of that kind in order, then around to the first; none of that kind: nowhere.
            assert landed == (where + where[:1] if where else [None]), kind
        anywhere = [pos for pos, k in enumerate(kinds) if k is not None]
        overlap.cursor = None
        await pilot.press("n", "n")
        assert overlap.cursor == anywhere[min(1, len(anywhere) - 1)]
        await pilot.press("N")
        assert overlap.cursor == anywhere[0]
        text = str(overlap.render())
        assert "teacher only" in text and "adapter only" in text and "both" in text


@pytest.mark.anyio
async def test_a_bad_adapter_path_says_why_in_one_line(make_app, tmp_path):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await rollout_ready(pilot)
        await pilot.press("t")
        await pilot.pause()
        overlap = app.screen.query_one(EditOverlap)
        await pilot.press("a")
        await pilot.pause()
        app.screen.query_one("#adapter", Input).value = str(tmp_path / "no-such-adapter")
        await pilot.press("enter")
        await until(pilot, lambda: overlap.waiting is not None and overlap.waiting.startswith("overlap failed"))
        assert overlap.edits is None
        assert "\n" not in overlap.waiting
