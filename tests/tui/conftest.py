"""TUI fixtures: the workbench on the real engine with tiny random models (base, teacher = base + adapter)."""

from __future__ import annotations

from typing import Callable

import pytest

from engine.core.config import ModelSpec
from engine.service.workbench import Workbench

from rmx_tui.app import RmxApp
from tests.tui.harness import settings


@pytest.fixture
def anyio_backend() -> str:
    """Pilot tests are coroutines marked `anyio` (a dependency of httpx); they run on asyncio."""
    return "asyncio"


@pytest.fixture
def specs(tiny_llama, tiny_llama_adapter) -> tuple[ModelSpec, ModelSpec]:
    base = ModelSpec(str(tiny_llama), dtype="float32", device="cpu")
    return base, ModelSpec(str(tiny_llama), adapter=str(tiny_llama_adapter), dtype="float32", device="cpu")


@pytest.fixture(scope="session")
def overlap_adapter(tiny_root, tiny_llama):
    """A small random adapter beside the teacher's: it changes some of the base's argmaxes, some where the teacher
    does (the compare view's edit overlap)."""
    from tests.tiny import build_adapter

    return build_adapter(tiny_root / "overlap-weak", tiny_llama, seed=2, scale=0.05)


@pytest.fixture
def client(specs) -> Workbench:
    """A fresh client per test: a reused KV cache must not make one test's numbers depend on another's."""
    engine = Workbench()
    engine.load(*specs)
    return engine


@pytest.fixture
def make_app(client, tmp_path) -> Callable[..., RmxApp]:
    """An app on the loaded client; pass Settings fields to change, or `client=` to wrap the engine."""

    def make(engine=None, **changes) -> RmxApp:
        return RmxApp(settings(export_dir=tmp_path, **changes), engine or client)

    return make
