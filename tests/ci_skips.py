"""Under ``CI=true``, a skipped test fails: CI must see what a newcomer sees, not a green run of
tests that proved nothing because a prerequisite (a corpus, a stored run) was missing.

A test that may skip for another reason (a CPU-only check on a machine with CUDA, a parameter that
does not apply) carries ``@pytest.mark.allowed_skip(match="regex", why="...")``: a skip whose
reason matches the regex stays a skip. Expected failures (xfail) are not skips and are untouched.

Loaded by ``conftest.py`` (which imports the two hooks), or on its own with ``-p ci_skips``.
"""
from __future__ import annotations

import os
import re

import pytest

CI_VAR = "CI"


def ci() -> bool:
    return os.environ.get(CI_VAR, "").lower() == "true"


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "allowed_skip(match, why): under CI=true a skip fails, except one whose reason matches this regex",
    )


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        reason = str(longrepr[2])
    else:
        reason = str(longrepr)
    return reason.removeprefix("Skipped: ")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not (report.skipped and ci()) or hasattr(report, "wasxfail"):
        return
    reason = _skip_reason(report)
    for mark in item.iter_markers("allowed_skip"):
        pattern = mark.kwargs.get("match", mark.args[0] if mark.args else None)
        if pattern is None:
            raise pytest.UsageError(f"{item.nodeid}: allowed_skip needs match='regex'")
        if re.search(pattern, reason):
            return
    report.outcome = "failed"
    report.longrepr = (f"skipped under {CI_VAR}=true, where a skip is a failure: {reason}\n"
                       "Build the missing prerequisite in a fixture (see tests/conftest.py), or, if this skip "
                       "is not about a missing prerequisite, mark the test @pytest.mark.allowed_skip(match=...).")
