"""The CI hook (ci_skips.py): under CI=true a skip is a failure, unless the test allows that skip."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

SAMPLE = '''
import pytest

@pytest.fixture
def missing_prerequisite():
    pytest.skip("the corpus is not built")

def test_passes():
    assert True

def test_skips_in_its_body():
    pytest.skip("no runs stored")

def test_skips_in_a_fixture(missing_prerequisite):
    pass

@pytest.mark.skip(reason="skipped by a marker")
def test_skipped_by_a_marker():
    pass

@pytest.mark.allowed_skip(match="has CUDA")
def test_allowed_skip():
    pytest.skip("this machine has CUDA")

@pytest.mark.allowed_skip(match="has CUDA")
def test_allowed_for_another_reason_only():
    pytest.skip("no runs stored")

@pytest.mark.xfail(strict=True, reason="a known bug")
def test_expected_failure():
    assert False
'''


def run_sample(tmp_path: Path, ci: str | None) -> tuple[subprocess.CompletedProcess, dict[str, str]]:
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    r = subprocess.run([sys.executable, "-m", "pytest", "-p", "ci_skips", "-p", "no:cacheprovider", "-v",
                        "-o", "addopts=", "--rootdir", str(tmp_path), str(tmp_path / "test_sample.py")],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    # -v: one line per test and phase, "test_sample.py::test_passes PASSED" (a setup error: "ERROR")
    outcomes: dict[str, str] = {}
    for m in re.finditer(r"^test_sample\.py::(\w+) (PASSED|FAILED|SKIPPED|XFAIL|ERROR)", r.stdout, re.M):
        outcomes.setdefault(m.group(1), m.group(2))
    return r, outcomes


def test_without_ci_skips_stay_skips(tmp_path):
    r, out = run_sample(tmp_path, ci=None)
    assert r.returncode == 0, r.stdout
    assert re.search(r"\b1 passed, 5 skipped, 1 xfailed\b", r.stdout), r.stdout
    assert set(out) == {"test_passes", "test_skips_in_its_body", "test_skips_in_a_fixture", "test_skipped_by_a_marker",
                        "test_allowed_skip", "test_allowed_for_another_reason_only", "test_expected_failure"}, r.stdout


def test_under_ci_a_skip_is_a_failure_unless_allowed(tmp_path):
    r, out = run_sample(tmp_path, ci="true")
    assert r.returncode == 1, r.stdout
    # a skip in the body fails; one in the setup (a fixture, a skip marker) is an error; the allowed one stays
    assert re.search(r"\b2 failed, 1 passed, 1 skipped, 1 xfailed, 2 errors\b", r.stdout), r.stdout
    assert out.get("test_allowed_skip") == "SKIPPED", r.stdout
    assert out.get("test_passes") == "PASSED", r.stdout
    assert out.get("test_expected_failure") == "XFAIL", r.stdout
    for name in ("test_skips_in_its_body", "test_allowed_for_another_reason_only"):
        assert out.get(name) == "FAILED", (name, r.stdout)
    for name in ("test_skips_in_a_fixture", "test_skipped_by_a_marker"):
        assert out.get(name) == "ERROR", (name, r.stdout)
    assert "skipped under CI=true" in r.stdout and "the corpus is not built" in r.stdout
    assert "no runs stored" in r.stdout


def test_ci_must_be_exactly_true(tmp_path):
    r, _ = run_sample(tmp_path, ci="0")
    assert r.returncode == 0 and "5 skipped" in r.stdout, r.stdout
