"""The Makefile gives each target the environment it is meant to run in.

``make lab`` is for people: live sliders (DIFFEDU_WIDGETS=live) and every core of the
machine for PyTorch. The unattended targets (test, unit, notebooks, book, slides) draw
fixed grids (DIFFEDU_WIDGETS=static) with one thread, unless OMP_NUM_THREADS is set.
Each target runs against a fake .venv whose programs only print their environment.
"""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")

FAKE = """#!/bin/sh
echo "RAN $(basename "$0") $*"
echo "DIFFEDU_WIDGETS=${DIFFEDU_WIDGETS-unset} OMP_NUM_THREADS=${OMP_NUM_THREADS-unset}"
"""


def _make(target, tmp_path, **env_extra):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True, exist_ok=True)
    for name in ("python", "jupyter", "jupyter-book"):
        (venv / "bin" / name).write_text(FAKE)
        (venv / "bin" / name).chmod(0o755)
    for stamp in (".test", ".course"):  # newer than pyproject.toml: nothing to install
        (venv / stamp).touch()
    env = {k: v for k, v in os.environ.items() if k not in ("DIFFEDU_WIDGETS", "OMP_NUM_THREADS", "MAKEFLAGS")}
    env.update(env_extra)
    out = subprocess.run(["make", "-s", "-C", str(ROOT), target, f"VENV={venv}"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    return [ln for ln in out.stdout.splitlines() if ln.startswith("DIFFEDU_WIDGETS=")], out.stdout


def test_lab_has_live_widgets_and_every_core(tmp_path):
    envs, out = _make("lab", tmp_path, DIFFEDU_WIDGETS="static", OMP_NUM_THREADS="1")
    assert "RAN jupyter lab lessons/" in out
    assert envs == [f"DIFFEDU_WIDGETS=live OMP_NUM_THREADS={os.cpu_count()}"], out


@pytest.mark.parametrize("target", ["notebooks", "site", "book", "slides", "unit"])
def test_unattended_targets_are_static_with_one_thread(target, tmp_path):
    envs, out = _make(target, tmp_path)
    assert envs and all(e == "DIFFEDU_WIDGETS=static OMP_NUM_THREADS=1" for e in envs), out


def test_a_thread_count_you_set_is_kept(tmp_path):
    envs, out = _make("notebooks", tmp_path, OMP_NUM_THREADS="2")
    assert envs == ["DIFFEDU_WIDGETS=static OMP_NUM_THREADS=2"], out


def test_browser_check_covers_every_page(tmp_path):
    _, out = _make("browser-check", tmp_path)
    assert "RAN python scripts/browser_check.py --all" in out


def test_make_test_checks_the_site_built_from_the_tested_lessons(tmp_path):
    """make test: unit tests, every lesson (saved with outputs), the book from those copies, every page."""
    _, out = _make("test", tmp_path)
    ran = [ln for ln in out.splitlines() if ln.startswith("RAN ")]
    order = ["python -m pytest tests", "python scripts/test_notebooks.py", "python scripts/build_site.py",
             "python scripts/browser_check.py --all"]
    positions = [next(i for i, ln in enumerate(ran) if ln.startswith("RAN " + cmd)) for cmd in order]
    assert positions == sorted(positions), ran
