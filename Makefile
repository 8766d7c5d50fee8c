# The two commands of the README:
#   make course   install into .venv, execute every lesson and build the book (_build/html)
#   make test     install what the tests need into .venv, run the unit tests and every lesson notebook,
#                 then build the book from the executed lessons and check every page in Chromium
# Other targets: make lab (JupyterLab on the lessons, live sliders), make slides (reveal.js decks in
#                _build/slides), make assets (rebuild assets/data), make browser-check (every page of
#                the built book in headless Chromium), make web-assets (MathJax, widgets, reveal.js), make clean.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip install --disable-pip-version-check -q -c constraints.txt

# Runs that execute lessons unattended (tests, the book, the slides) draw every interactive figure
# as a fixed grid (DIFFEDU_WIDGETS=static: the same output on every run) and use one PyTorch thread
# per process unless you say otherwise: the lessons' tensors are small, and on a busy 2-core machine
# two threads per process fight each other (several times slower, measured).
UNATTENDED := test unit notebooks site book slides
$(UNATTENDED): export DIFFEDU_WIDGETS := static
$(UNATTENDED): export OMP_NUM_THREADS ?= 1
# JupyterLab is for people: live sliders, and PyTorch may use every core of the machine.
LAB_THREADS ?= $(shell getconf _NPROCESSORS_ONLN 2>/dev/null || nproc --all 2>/dev/null || echo 4)
lab: export DIFFEDU_WIDGETS := live
lab: export OMP_NUM_THREADS := $(LAB_THREADS)

.PHONY: course test unit notebooks site book lab slides assets browser-check web-assets clean

course: $(VENV)/.course book

test: $(VENV)/.test web-assets unit notebooks site
	$(BIN)/python scripts/browser_check.py --all --skip-without-browser

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.test: pyproject.toml constraints.txt | $(VENV)/bin/python
	@echo "installing diffedu, the test tools and Jupyter Book into $(VENV) (first time: a few minutes)"
	$(PIP) -e ".[test,book]"
	@touch $@

$(VENV)/.course: pyproject.toml constraints.txt | $(VENV)/bin/python
	@echo "installing diffedu, JupyterLab, the test tools and Jupyter Book into $(VENV)"
	$(PIP) -e ".[course,test,book]"
	@touch $@ $(VENV)/.test

# MathJax, the widget manager and reveal.js from npm (pinned, sha512-checked); without npm the
# browser tests skip and the book falls back to CDNs, with a warning.
web-assets: | $(VENV)/bin/python
	$(BIN)/python scripts/fetch_web_assets.py --allow-cdn

unit:
	$(BIN)/python -m pytest tests -q

# Every lesson under nbval, two at a time; each is saved with its outputs in _build/executed/.
notebooks:
	$(BIN)/python scripts/test_notebooks.py

# The book from those executed lessons (nothing runs twice), for the browser check of every page.
site:
	$(BIN)/python scripts/fetch_web_assets.py --allow-cdn --only site
	$(BIN)/python scripts/build_site.py

# Jupyter Book executes each lesson while it reads it; book/_ext/build_progress.py prints one line
# per lesson with its time as it finishes ("lesson  3/11  lessons/03_... 52.1 s").
book: $(VENV)/.course
	$(BIN)/python scripts/fetch_web_assets.py --allow-cdn --only site
	$(BIN)/jupyter-book build . --all
	@echo "book: open _build/html/index.html"

# One deck per lesson, offline; the figures come from the book build when there is one
# (make book first), otherwise each lesson is executed here (one line per lesson, with its time).
slides: $(VENV)/.course
	$(BIN)/python scripts/fetch_web_assets.py
	$(BIN)/python scripts/build_slides.py

browser-check:
	$(BIN)/python scripts/browser_check.py --all

lab: $(VENV)/.course
	$(BIN)/jupyter lab lessons/

assets: $(VENV)/.test
	$(BIN)/python scripts/build_assets.py

clean:
	rm -rf _build .pytest_cache
