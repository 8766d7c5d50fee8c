"""dd.check_answer speaks in plain sentences and never raises; dd.check_solution proves that a
check accepts its solution and rejects wrong answers; the lessons' exercise cells use them so."""
import contextlib
import io
import json
import re
from pathlib import Path

import pytest
import torch

import diffedu as dd

ROOT = Path(__file__).resolve().parents[1]
LESSONS = sorted(ROOT.glob("lessons/[01][0-9]_*.ipynb"))
pytestmark = pytest.mark.usefixtures("one_thread")


def said(got, want, **kw):
    """(result, printed text) of one check_answer call."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        ok = dd.check_answer("x", got, want, **kw)
    text = buf.getvalue().strip()
    assert text.count("\n") == 0 and text.startswith("[x] "), text      # one sentence
    return ok, text


WANT = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
PAIR = (torch.tensor([1.0, -2.0]), torch.eye(2))


def test_right_answer():
    ok, text = said(WANT.clone(), WANT)
    assert ok and "correct" in text


def test_none_is_not_attempted():
    assert said(None, WANT) == (False, "[x] not attempted yet: replace the `None` with your answer.")
    assert said(None, PAIR)[1].endswith("not attempted yet: replace the `None` with your answer.")


@pytest.mark.parametrize("got", ["a string", {"a": 1}, [torch.ones(1), "x"], object(), {1, 2}])
def test_wrong_type(got):
    ok, text = said(got, WANT)
    assert not ok and "expected numbers" in text


def test_wrong_shape():
    ok, text = said(torch.ones(3), WANT)
    assert not ok and "wrong shape: got (3,), expected (2, 2)" in text
    assert "wrong shape" in said([1.0, 2.0, 3.0], torch.ones(2))[1]       # a list of the wrong length


def test_nan():
    ok, text = said(torch.tensor([[1.0, float("nan")], [3.0, 4.0]]), WANT)
    assert not ok and "NaN or inf (1 entries)" in text


def test_wrong_value_names_the_entry():
    got = WANT.clone()
    got[1, 0] = 5
    ok, text = said(got, WANT)
    assert not ok and "1 of 4 entries differ" in text and "index (1, 0)" in text


def test_pairs_part_by_part():
    assert said(tuple(p.clone() for p in PAIR), PAIR)[0]
    assert said([p.clone() for p in PAIR], PAIR)[0]                       # a list is a pair too
    ok, text = said((PAIR[0], 2 * PAIR[1]), PAIR, parts=("mean", "covariance"))
    assert not ok and "the covariance is wrong" in text and "not yet" in text
    ok, text = said((PAIR[0], torch.ones(2)), PAIR)
    assert not ok and "the part 2 is wrong: wrong shape" in text
    ok, text = said(0.3, PAIR, parts=("mean", "covariance"))                # a float where a pair is expected
    assert not ok and "expected 2 parts (mean, covariance)" in text and "float" in text
    ok, text = said((PAIR[0],), PAIR)
    assert not ok and "got 1" in text
    ok, text = said(("mean", None), PAIR)
    assert not ok and "part 1 is wrong: expected numbers" in text


def test_integer_answers():
    assert said(42, 42)[0] and said(torch.tensor(42), 42)[0]
    assert not said(43, 42)[0]


def test_check_solution_accepts_a_right_solution():
    assert dd.check_solution("x", WANT.clone(), WANT)
    assert dd.check_solution("x", tuple(p.clone() for p in PAIR), PAIR, parts=("mean", "covariance"))
    assert dd.check_solution("x", 42, 42)


def test_check_solution_prints_only_its_own_verdict(capsys):
    dd.check_solution("x", WANT.clone(), WANT)
    assert capsys.readouterr().out.strip().splitlines() == ["[x] correct (largest error 0.00e+00)."]


def test_check_solution_fails_on_a_broken_check():
    with pytest.raises(AssertionError, match="accepts a wrong answer"):    # a tolerance so wide it accepts anything
        dd.check_solution("x", WANT.clone(), WANT, atol=1e3)
    with pytest.raises(AssertionError, match="does not accept the solution"):
        dd.check_solution("x", WANT + 1, WANT)
    # a pair whose check only looks at the first part would accept a wrong covariance
    with pytest.raises(AssertionError, match="accepts a wrong answer"):
        dd.check_solution("x", (PAIR[0], PAIR[1]), (PAIR[0], PAIR[1]), rtol=10.0)


# ---- the lessons' exercise cells -----------------------------------------------------------

def cells(path):
    return json.loads(path.read_text())["cells"]


def src(cell):
    return "".join(cell["source"])


def solution_cells(path):
    return [c for c in cells(path) if c["cell_type"] == "code" and "hide-input" in c["metadata"].get("tags", [])]


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name[:2])
def test_solution_cells_never_touch_the_learners_names(path):
    sols = solution_cells(path)
    assert sols, f"{path.name} has no solution cells"
    for cell in sols:
        s = src(cell)
        assert cell["metadata"].get("jupyter", {}).get("source_hidden") is True, cell["id"]
        assert not re.search(r"\bmy_\w+", s), f"{path.name} {cell['id']} uses a learner's name"
        assert "solution_" in s and "dd.check_solution(" in s, cell["id"]
        assert "check_answer" not in s, cell["id"]


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name[:2])
def test_exercise_script_is_idempotent(path, tmp_path):
    from conftest import load_script
    copy = tmp_path / path.name
    copy.write_text(path.read_text())
    assert load_script("exercise_cells").fix_notebook(copy) == 0
    assert copy.read_text() == path.read_text()


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name[:2])
def test_check_cells_pass_the_raw_answer(path):
    """A learner cell defines my_X and checks my_X(...) itself, not a transformed answer."""
    for c in cells(path):
        s = src(c)
        if c["cell_type"] == "code" and "return None" in s and "dd.check_answer(" in s:
            assert "answer[" not in s and "float(answer" not in s and ".flatten()" not in s, c["id"]


def lesson01_namespace():
    ns = {}
    exec("import torch\nimport diffedu as dd\nfrom diffedu import toy\n"
         "lin = dd.NoiseSchedule.linear(1000)", ns)
    return ns


@pytest.mark.parametrize("stub", ["None", "0.5", "'text'", "torch.zeros(7)", "(torch.zeros(2),)",
                                  "{'mean': 1}", "float('nan')", "[1.0, 2.0]"])
def test_lesson01_check_cells_never_raise(stub):
    path = ROOT / "lessons" / "01_forward_process_2d.ipynb"
    learner = [src(c) for c in cells(path)
               if c["cell_type"] == "code" and "return None" in src(c) and "check_answer" in src(c)]
    assert len(learner) == 3
    ns = lesson01_namespace()
    for s in learner:
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            exec(s.replace("return None", f"return {stub}"), ns)          # must not raise
        lines = buf.getvalue().strip().splitlines()
        assert len(lines) == s.count("dd.check_answer(") and all(l.startswith("[") for l in lines), lines
        assert not any("correct" in l for l in lines), lines


def test_lesson01_solutions_pass_check_solution():
    path = ROOT / "lessons" / "01_forward_process_2d.ipynb"
    ns = lesson01_namespace()
    with contextlib.redirect_stdout(io.StringIO()):
        for c in cells(path):
            if c["cell_type"] == "code" and ("return None" in src(c) or c in solution_cells(path)):
                exec(src(c), ns)                                          # the solutions assert check_solution


PREDICT = re.compile(r"\*\*Exercise \d+ \(predict")
ON_PAPER = re.compile(r"\*\*Exercise \d+ \(on paper")
PARTS = {"Part 1": "01 02 03 04", "Part 2": "05 06 07 08", "Part 3": "09 10 11", "Part 4": "12 13 14 15 16"}


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name[:2])
def test_every_lesson_asks_for_a_prediction_that_is_checked(path):
    """At least one exercise asks the learner to predict or explain before computing; the next
    code cell takes the learner's prediction (my_...) and checks it against the computed answer."""
    cs = cells(path)
    found = [i for i, c in enumerate(cs) if c["cell_type"] == "markdown" and PREDICT.search(src(c))]
    assert found, f"{path.name} has no '**Exercise N (predict ...' exercise"
    for i in found:
        code = next(c for c in cs[i + 1:] if c["cell_type"] == "code")
        assert "my_" in src(code) and "dd.check_answer(" in src(code), code["id"]


@pytest.mark.parametrize("part", PARTS, ids=str)
def test_every_part_has_a_derivation_on_paper_with_a_worked_solution(part):
    paths = [p for p in LESSONS if p.name[:2] in PARTS[part].split()]
    texts = [src(c) for p in paths for c in cells(p) if c["cell_type"] == "markdown"]
    derivations = [t for t in texts if ON_PAPER.search(t)]
    assert derivations, f"{part} has no '**Exercise N (on paper).**'"
    for t in derivations:
        assert "<details>" in t and "Worked solution" in t and "</details>" in t, t[:80]
