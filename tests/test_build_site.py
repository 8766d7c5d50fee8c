"""make test builds the book from the lessons the notebook tests ran (scripts/nbval_outputs.py saves
them with their outputs; scripts/build_site.py stages and builds them without executing again)."""
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from conftest import load_script

ROOT = Path(__file__).resolve().parents[1]


def test_nbval_run_saves_the_notebook_with_its_outputs(tmp_path):
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                           "language": "python"}})
    nb.cells = [nbformat.v4.new_markdown_cell("# A"), nbformat.v4.new_code_cell("print(1 + 1)"),
                nbformat.v4.new_code_cell("2 * 3"),
                nbformat.v4.new_code_cell("from tqdm.auto import tqdm\nfor _ in tqdm(range(7)):\n    pass")]
    path = tmp_path / "tiny.ipynb"
    nbformat.write(nb, path)
    env = dict(os.environ, PYTHONPATH=str(ROOT / "scripts"))
    run = subprocess.run([sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env", "-q",
                          "-p", "no:cacheprovider", "-p", "nbval_outputs", "--save-executed", str(tmp_path / "out"),
                          str(path)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    saved = nbformat.read(tmp_path / "out" / "tiny.ipynb", as_version=4)
    printed, result = saved.cells[1], saved.cells[2]
    assert printed.outputs[0]["output_type"] == "stream" and printed.outputs[0]["text"] == "2\n"
    assert result.outputs[0]["data"]["text/plain"] == "6" and result.execution_count == 2
    nbformat.validate(saved)
    # the progress bar is saved as a widget view, with its last state in the notebook's metadata
    view = saved.cells[3].outputs[0]["data"]["application/vnd.jupyter.widget-view+json"]
    state = saved.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    assert view["model_id"] in state
    bars = [w["state"] for w in state.values() if w["model_name"] in ("FloatProgressModel", "IntProgressModel")]
    assert [(b["value"], b["max"]) for b in bars] == [(7, 7)]


def test_site_needs_an_executed_copy_of_every_lesson(tmp_path):
    site = load_script("build_site")
    with pytest.raises(SystemExit, match="run  python scripts/test_notebooks.py  first"):
        site.stage(tmp_path / "nothing", tmp_path / "stage")


def test_site_lessons_follow_the_table_of_contents():
    import yaml
    site = load_script("build_site")
    lessons = site.toc_lessons(yaml.safe_load((ROOT / "_toc.yml").read_text()))
    assert lessons == sorted(p.with_suffix("").relative_to(ROOT).as_posix() for p in ROOT.glob("lessons/*.ipynb"))
