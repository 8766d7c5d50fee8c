# The two commands of the README:
#   make course   install into .venv, execute every lesson and build the book (_build/html)
#   make test     install what the tests need into .venv, run the unit tests and every lesson notebook
# Other targets: make lab (JupyterLab on the lessons), make assets (rebuild assets/data),
#                make browser-check (render a built page in headless Chromium), make clean.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip install --disable-pip-version-check -q -c constraints.txt
export DIFFEDU_WIDGETS := static
# One PyTorch thread per process unless you say otherwise: the lessons' tensors are small, and on a
# busy 2-core machine two threads per process fight each other (several times slower, measured).
export OMP_NUM_THREADS ?= 1

.PHONY: course test unit notebooks book lab assets browser-check clean

course: $(VENV)/.course book

test: $(VENV)/.test unit notebooks

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.test: pyproject.toml constraints.txt | $(VENV)/bin/python
	@echo "installing diffedu and the test tools into $(VENV) (first time: a few minutes)"
	$(PIP) -e ".[test]"
	@touch $@

$(VENV)/.course: pyproject.toml constraints.txt | $(VENV)/bin/python
	@echo "installing diffedu, JupyterLab, the test tools and Jupyter Book into $(VENV)"
	$(PIP) -e ".[course,test,book]"
	@touch $@ $(VENV)/.test

unit:
	$(BIN)/python -m pytest tests -q

notebooks:
	$(BIN)/python scripts/test_notebooks.py

book: $(VENV)/.course
	$(BIN)/python scripts/fetch_web_assets.py --allow-cdn
	$(BIN)/jupyter-book build . --all
	@echo "book: open _build/html/index.html"

browser-check:
	$(BIN)/python scripts/browser_check.py

lab: $(VENV)/.course
	$(BIN)/jupyter lab lessons/

assets: $(VENV)/.test
	$(BIN)/python scripts/build_assets.py

clean:
	rm -rf _build .pytest_cache
