"""A pytest plugin that keeps what nbval computed: each notebook, with the outputs of its run.

    pytest --nbval-lax -p nbval_outputs --save-executed _build/executed lessons/01_forward_process_2d.ipynb

(with scripts/ on PYTHONPATH; scripts/test_notebooks.py does this). After the run,
``_build/executed/lessons/01_forward_process_2d.ipynb`` holds the lesson with every cell's output
and execution count, as Jupyter would save it. ``scripts/build_site.py`` builds the book from these
copies, so the lessons that the tests ran are the pages that the browser check opens, and nothing
is executed twice.

Widgets (tqdm's progress bars in a kernel) are saved as Jupyter saves them: each widget's last
state in the notebook's ``metadata.widgets``, gathered from the kernel's comm messages the way
nbclient (which ``make book`` uses) gathers it, so the book draws the finished bars.
"""
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _serialize(state: dict) -> dict:
    """One widget's entry of the widget-state schema (@jupyter-widgets/schema, version 2)."""
    return {"model_name": state.get("_model_name"), "model_module": state.get("_model_module"),
            "model_module_version": state.get("_model_module_version"), "state": state}


def _record_widget_state():
    """Wrap nbval's message reader so that every comm message's widget state is kept on its notebook."""
    from nbval.plugin import IPyNbFile

    read = IPyNbFile.get_kernel_message
    if getattr(read, "keeps_widget_state", False):
        return

    def get_kernel_message(self, *args, **kwargs):
        msg = read(self, *args, **kwargs)
        content = msg.get("content", {})
        if msg.get("msg_type") in ("comm_open", "comm_msg") and "state" in content.get("data", {}):
            self.__dict__.setdefault("widget_state", {}).setdefault(content["comm_id"], {}).update(
                content["data"]["state"])
        return msg

    get_kernel_message.keeps_widget_state = True
    IPyNbFile.get_kernel_message = get_kernel_message


def pytest_configure(config):
    if config.getoption("--save-executed", default=None):
        _record_widget_state()


def pytest_addoption(parser):
    parser.addoption("--save-executed", default=None, metavar="DIR",
                     help="write each notebook with the outputs of this run under DIR (same relative path)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    yield
    if call.when == "call" and hasattr(item, "test_outputs") and hasattr(item, "cell"):
        item.cell.outputs = [o for o in (item.test_outputs or []) if o.get("output_type") != "clear_output"]
        item.cell.execution_count = item.cell_num + 1
        for out in item.cell.outputs:
            if out.get("output_type") == "execute_result":
                out["execution_count"] = item.cell.execution_count


def pytest_sessionfinish(session):
    target = session.config.getoption("--save-executed")
    if not target:
        return
    notebooks = {id(item.parent): item.parent for item in session.items if hasattr(item, "cell")}
    for nb_file in notebooks.values():
        path = Path(str(nb_file.fspath)).resolve()
        rel = path.relative_to(ROOT) if path.is_relative_to(ROOT) else Path(path.name)
        out = Path(target) / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        state = {k: _serialize(v) for k, v in nb_file.__dict__.get("widget_state", {}).items() if "_model_name" in v}
        if state:
            nb_file.nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {
                "state": state, "version_major": 2, "version_minor": 0}}
        nbformat.write(nb_file.nb, str(out))
