"""Shared fixtures for the library's tests: tiny configs, isolated caches and stores.

Nothing here is autouse: the book and notebook tests read the real run store and must not see
these redirections. Test modules opt in with ``pytestmark = pytest.mark.usefixtures(...)``.

The tiny corpus (``load_corpus('tiny', 'bpe4096')``) is read from the real cache (it is built once
and only read here); anything that writes (checkpoints, a rebuilt corpus, run records) goes to a
temporary directory, never to the real cache's checkpoints or to the repository's ``runs/``.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The real cache, captured before any test redirects SCALING_LIB_CACHE.
REAL_CACHE = Path(os.environ.get("SCALING_LIB_CACHE", Path.home() / ".cache" / "scaling_lib"))
TINY = dict(corpus="tiny", n_layer=1, d_model=16, n_ctx=32, batch_size=4, eval_tokens=1024)
# The output layer's strategy pinned (scaling_lib.head): the strategies agree only to float tolerance,
# and the determinism tests compare runs to rel 1e-6. test_head.py measures ("auto") explicitly.
os.environ.setdefault("SCALING_LIB_HEAD", "chunked")


@pytest.fixture(scope="session")
def tiny_corpus():
    """The tiny corpus from the real cache, read only; the tests that need it skip if it was never built."""
    from scaling_lib.data import DataError, load_corpus

    try:
        return load_corpus("tiny", "bpe4096", build=False)
    except DataError as e:
        pytest.skip(f"the tiny corpus is not built in {REAL_CACHE} ({e}): run load_corpus('tiny') once")


@pytest.fixture
def tiny_cfg(tiny_corpus):
    """A factory of tiny run configs on the tiny corpus (d_model 16, 1 layer, n_ctx 32, batch 4)."""
    from scaling_lib.config import RunConfig

    def make(**kw):
        return RunConfig(**{**TINY, "tokens": 4096, **kw})

    return make


@pytest.fixture
def torch_one_thread():
    """One torch thread (the machine is shared with a running sweep); restored afterwards."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def runs_env(tmp_path, monkeypatch) -> Path:
    """SCALING_LIB_RUNS in a temporary directory: nothing can default to the repository's runs/."""
    root = tmp_path / "default-runs"
    monkeypatch.setenv("SCALING_LIB_RUNS", str(root))
    return root


@pytest.fixture
def linked_cache(tmp_path, monkeypatch) -> Path:
    """A temporary SCALING_LIB_CACHE whose corpora are the real (built) ones, linked read-only in
    spirit: checkpoints and anything else written lands in the temporary directory."""
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "corpora").symlink_to(REAL_CACHE / "corpora", target_is_directory=True)
    monkeypatch.setenv("SCALING_LIB_CACHE", str(cache))
    return cache


@pytest.fixture
def copied_cache(tmp_path, monkeypatch, tiny_corpus) -> Path:
    """A private copy of the tiny corpus (and of its raw package, so that it can be rebuilt offline)."""
    cache = tmp_path / "cache"
    shutil.copytree(REAL_CACHE / "corpora" / "tiny" / "bpe4096", cache / "corpora" / "tiny" / "bpe4096")
    raw = REAL_CACHE / "raw" / "shakespeare"
    if raw.exists():
        shutil.copytree(raw, cache / "raw" / "shakespeare", symlinks=True)
    monkeypatch.setenv("SCALING_LIB_CACHE", str(cache))
    return cache
