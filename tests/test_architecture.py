"""The shape of the package: imports run one way, and every module is short enough to read.

    infrastructure   train, runs, checkpoints, data, runtime, check, plot, widgets, _validate
    shared math      schedules, forward, samplers, sde, langevin, toy, nets, guidance, metrics (, flow, distill)
    parts            images/, text/

Anything may import the infrastructure; the infrastructure imports only itself. The shared math
imports math and infrastructure, never a part. A part imports the shared math, the
infrastructure and itself, never the other part. Imports inside functions count too.
"""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "diffedu"
INFRASTRUCTURE = {"train", "runs", "checkpoints", "data", "runtime", "check", "plot", "widgets", "_validate"}
PARTS = {"images", "text"}
MAX_LINES = 400


def modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def dotted(path: Path) -> list[str]:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def imported(path: Path) -> set[tuple[str, ...]]:
    """Every diffedu module (names after 'diffedu') that the file imports, anywhere in it."""
    here = dotted(path)
    package = here if path.name == "__init__.py" else here[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [a.name.split(".") for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            mod = base + (node.module.split(".") if node.module else [])
            found += [mod] + [mod + [a.name] for a in node.names]  # `from x import y`: y may be a module
    return {tuple(n[1:]) for n in found if len(n) > 1 and n[0] == "diffedu" and is_module(tuple(n[1:]))}


def layer(name: tuple[str, ...]) -> str:
    if name[0] in PARTS:
        return name[0]
    return "infrastructure" if name[0] in INFRASTRUCTURE else "math"


def is_module(name: tuple[str, ...]) -> bool:
    return (PACKAGE.joinpath(*name).with_suffix(".py").exists() or (PACKAGE.joinpath(*name) / "__init__.py").exists())


ALLOWED = {"infrastructure": {"infrastructure"}, "math": {"infrastructure", "math"},
           "images": {"infrastructure", "math", "images"}, "text": {"infrastructure", "math", "text"}}


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_imports_run_one_way(path):
    here = tuple(dotted(path)[1:])
    if not here:  # diffedu/__init__.py gathers the helpers of every layer for `import diffedu as dd`
        return
    mine = layer(here)
    bad = sorted(".".join(n) for n in imported(path) if layer(n) not in ALLOWED[mine])
    assert not bad, f"{'.'.join(dotted(path))} ({mine}) must not import {bad}"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_every_module_is_short_enough_to_read(path):
    n = len(path.read_text().splitlines())
    assert n <= MAX_LINES, f"{path.relative_to(PACKAGE.parent)} has {n} lines; split it (at most {MAX_LINES})"


def test_the_checker_sees_imports():
    """The parser itself: relative, absolute and function-level imports are all found."""
    assert ("forward",) in imported(PACKAGE / "samplers.py")
    assert ("guidance",) in imported(PACKAGE / "images" / "pipeline.py")
    assert ("images", "unet") in imported(PACKAGE / "images" / "pipeline.py")
    assert layer(("images", "unet")) == "images" and layer(("runs",)) == "infrastructure"
