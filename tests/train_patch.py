"""Patching `scaling_lib.train` in the processes a test starts: a sweep, its pool's workers, submitit's
jobs. Each imports a `sitecustomize` module at start-up (it lies first on PYTHONPATH); the one written
here waits for `scaling_lib.train` to be imported, then gives it a smaller final evaluation and runs the
test's own `patch(module)` on it.

A test passes the source of `patch` (and whatever helpers it needs) as text, since it runs in another
process: `child_env(tmp_path / "site", cache, runs, patch=SOURCE, TEST_X="...")`.
"""
from __future__ import annotations

import os
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FINAL_EVAL_TOKENS = 8192  # a test's runs score their final evaluation on this many tokens, not a million

_HOOK = f'''

import importlib.abc as _abc
import importlib.util as _util
import sys as _sys


class _PatchTrain(_abc.MetaPathFinder):
    """Once scaling_lib.train is imported: a smaller final evaluation, then patch(module)."""

    def find_spec(self, name, path, target=None):
        if name != "scaling_lib.train":
            return None
        _sys.meta_path.remove(self)
        spec = _util.find_spec(name)
        exec_module = spec.loader.exec_module

        def patched(module):
            exec_module(module)
            module.FINAL_EVAL_TOKENS = {FINAL_EVAL_TOKENS}
            patch(module)

        spec.loader.exec_module = patched
        return spec


_sys.meta_path.insert(0, _PatchTrain())
'''

NO_PATCH = '''
def patch(module):
    pass
'''


def sitecustomize(patch: str = NO_PATCH) -> str:
    """The text of a sitecustomize module: `patch` (Python source that defines `patch(module)`), then the hook."""
    if "def patch(" not in patch:
        raise ValueError("the patch source must define patch(module)")
    return textwrap.dedent(patch).strip() + "\n" + _HOOK


def child_env(site: Path, cache: Path, runs: Path | None = None, *, patch: str = NO_PATCH,
              **extra: str) -> dict[str, str]:
    """The environment of a child process: one thread, the test's cache and store, and `site` (created,
    with the sitecustomize of `patch`) first on PYTHONPATH, then the checkout."""
    site.mkdir(parents=True, exist_ok=True)
    (site / "sitecustomize.py").write_text(sitecustomize(patch))
    env = dict(os.environ, SCALING_LIB_CACHE=str(cache), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", **extra)
    if runs is not None:
        env["SCALING_LIB_RUNS"] = str(runs)
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(REPO), env.get("PYTHONPATH", "")])
    return env
