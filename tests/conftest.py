"""Shared fixtures: tiny random-weight models on disk, an isolated rmx cache, and the GPU marker."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.tiny import build_adapter, build_answerer, build_model, write_answered


def pytest_configure(config):
    # Tiny models are dominated by thread hand-offs; one thread is faster and steadier on 2-core CI.
    import torch

    torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tiny")


@pytest.fixture(scope="session")
def tiny_llama(tiny_root) -> Path:
    return build_model(tiny_root / "llama", "llama", seed=0)


@pytest.fixture(scope="session")
def tiny_llama_teacher(tiny_root, tiny_llama) -> Path:
    """A second Llama with the same tokenizer and different weights: it disagrees with the base often."""
    return build_model(tiny_root / "llama-teacher", "llama", seed=7, tokenizer_from=tiny_llama)


@pytest.fixture(scope="session")
def tiny_llama_adapter(tiny_root, tiny_llama) -> Path:
    return build_adapter(tiny_root / "llama-adapter", tiny_llama)


@pytest.fixture(scope="session")
def tiny_gpt2(tiny_root) -> Path:
    return build_model(tiny_root / "gpt2", "gpt2", seed=0)


@pytest.fixture(scope="session")
def tiny_gpt2_adapter(tiny_root, tiny_gpt2) -> Path:
    return build_adapter(tiny_root / "gpt2-adapter", tiny_gpt2)


@pytest.fixture(scope="session")
def tiny_answerer(tiny_root, tiny_llama) -> Path:
    """The tiny Llama fine-tuned to answer tests.tiny.ANSWERED right: a teacher (or model) whose pass@1 is 1."""
    return build_answerer(tiny_root / "llama-answerer", tiny_llama)


@pytest.fixture(scope="session")
def answered_dataset(tiny_root) -> Path:
    """tests.tiny.ANSWERED as a .jsonl dataset."""
    return write_answered(tiny_root / "answered.jsonl")


@pytest.fixture(scope="session")
def tiny_other_vocab(tiny_root) -> Path:
    """A Llama whose tokenizer has a different vocabulary size."""
    return build_model(tiny_root / "llama-other-vocab", "llama", seed=3, vocab_size=320)


USER_RUNTIME_DIR = os.environ.get("RMX_RUNTIME_DIR")
"""The runtime dir the suite was started with: a fixture that finds another one set knows an outer fixture did."""


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path_factory, monkeypatch):
    """Keep caches, run dirs and daemon sockets out of the user's; the demo conversion cache is shared per session.

    A daemon a test started in its own runtime dir and left running is stopped afterwards, so none outlives the suite
    (a module-scoped fixture that runs a daemon for its tests sets RMX_RUNTIME_DIR first and keeps its own).
    """
    shared_cache = os.environ.get("RMX_TEST_CACHE") or str(tmp_path_factory.getbasetemp() / "rmx-cache")
    monkeypatch.setenv("RMX_CACHE_DIR", shared_cache)
    monkeypatch.setenv("RMX_DATA_DIR", str(tmp_path_factory.mktemp("rmx-data")))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    if os.environ.get("RMX_RUNTIME_DIR") != USER_RUNTIME_DIR:  # a module-scoped daemon fixture set its own
        yield
        return
    runtime = Path(tempfile.mkdtemp(prefix="rmx-", dir="/tmp"))  # short: a socket path must fit in ~104 bytes
    monkeypatch.setenv("RMX_RUNTIME_DIR", str(runtime))
    yield
    from engine.service.daemon import stop_daemon

    with monkeypatch.context() as env:
        env.setenv("RMX_RUNTIME_DIR", str(runtime))
        leaked = stop_daemon()
    shutil.rmtree(runtime, ignore_errors=True)
    assert leaked is None, f"the test left a daemon running (pid {leaked.pid})"
