"""pyproject.toml, constraints.txt and environment.yml must describe the same dependencies."""
import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def _name(s):
    return re.sub(r"[-_.]+", "-", s).lower()


def _pyproject():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in meta["dependencies"]]
    for extra in ("course", "test", "book"):
        reqs += [Requirement(r) for r in meta["optional-dependencies"][extra]]
    return {_name(r.name): r for r in reqs}


def _pins(lines):
    pins = {}
    for line in lines:
        line = line.strip().lstrip("- ").strip()
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            pins[_name(name)] = version.strip()
    return pins


def test_constraints_satisfy_pyproject_ranges():
    pins = _pins((ROOT / "constraints.txt").read_text().splitlines())
    for name, req in _pyproject().items():
        if name in pins:
            assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} violates {req}"
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"


def test_environment_yml_lists_every_dependency_with_the_tested_pin():
    env = (ROOT / "environment.yml").read_text()
    env_reqs = {}
    for line in env.splitlines():
        m = re.match(r"\s+- ([A-Za-z][\w.-]*)\s*([=<>!].*)?$", line)
        if m and m.group(1) not in ("python", "pip"):
            env_reqs[_name(m.group(1))] = (m.group(2) or "").strip()
    pins = _pins((ROOT / "constraints.txt").read_text().splitlines())
    for name, req in _pyproject().items():
        assert name in env_reqs, f"{name} is in pyproject.toml but not in environment.yml"
        spec = env_reqs[name]
        if name in pins:
            assert spec == f"=={pins[name]}", f"environment.yml pins {name}{spec}, constraints.txt =={pins[name]}"
        else:
            assert Requirement(name + spec).specifier == req.specifier or spec, f"{name} has no version bound"


def test_ci_installs_chromium_only_when_missing_and_never_a_browser_of_playwrights():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "[ -x /usr/bin/chromium ] || missing+=(chromium)" in ci
    assert ci.count("apt-get update") == 1 and "make test" in ci
    assert "playwright install" not in ci
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(r.startswith("playwright") for r in meta["test"])
    assert any(r.startswith("jupyterlab-rise") for r in meta["course"])


def test_pages_workflow_builds_with_make_course_and_deploys_the_html():
    wf = (ROOT / ".github" / "workflows" / "book.yml").read_text()
    for step in ("actions/checkout@", "actions/setup-python@", 'python-version: "3.11"', "make course",
                 "actions/upload-pages-artifact@", "path: _build/html", "actions/deploy-pages@"):
        assert step in wf, f"the Pages workflow lacks {step!r}"
