"""Make the hidden solution cells of the lessons' exercises safe to run after the learner's cells.

For every code cell tagged ``hide-input`` (a solution) in the notebooks given as arguments:

* the learner's names ``my_X`` become ``solution_X`` in that cell only, so "Run All" never
  overwrites the learner's function;
* ``metadata.jupyter.source_hidden = true`` (JupyterLab collapses the input; the tag stays
  for the book);
* ``assert dd.check_answer(...)`` becomes ``assert dd.check_solution(...)`` with the same
  arguments: the check must accept the solution and reject wrong answers.

Deterministic and idempotent; cell ids, outputs and all other cells are kept.

    .venv/bin/python scripts/exercise_cells.py lessons/01_*.ipynb lessons/02_*.ipynb ...
"""
import json
import re
import sys
from pathlib import Path

MY_NAME = re.compile(r"\bmy_(\w+)")
ASSERT_CHECK = re.compile(r"\bassert\s+dd\.check_answer\(")


def is_solution(cell) -> bool:
    return cell["cell_type"] == "code" and "hide-input" in cell.get("metadata", {}).get("tags", [])


def fix_source(src: str) -> str:
    src = MY_NAME.sub(r"solution_\1", src)
    return ASSERT_CHECK.sub("assert dd.check_solution(", src)


def fix_notebook(path: Path) -> int:
    text = path.read_text(encoding="utf-8")
    nb = json.loads(text)
    changed = 0
    for cell in nb["cells"]:
        if not is_solution(cell):
            continue
        src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        new = fix_source(src)
        meta = cell.setdefault("metadata", {})
        if new != src or meta.get("jupyter", {}).get("source_hidden") is not True:
            changed += 1
        cell["source"] = new.splitlines(keepends=True) if isinstance(cell["source"], list) else new
        meta.setdefault("jupyter", {})["source_hidden"] = True
    out = json.dumps(nb, indent=1, ensure_ascii=False) + "\n"
    if out != text:
        path.write_text(out, encoding="utf-8")
    return changed


def main(argv):
    if not argv:
        print(__doc__)
        return 2
    for name in argv:
        print(f"{name}: {fix_notebook(Path(name))} solution cells changed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
