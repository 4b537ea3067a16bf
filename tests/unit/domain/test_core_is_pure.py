"""The domain core does no I/O and reads no clock: checked on its source, module by module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import pitlane.domain

DOMAIN = Path(pitlane.domain.__file__).parent
MODULES = sorted(DOMAIN.rglob("*.py"))
FORBIDDEN_IMPORTS = {"faust", "mode", "redis", "kafka", "aiokafka", "aiohttp", "socket", "os"}
DECODING_MODULES = {"events.py"}  # raw bytes become events here, so orjson is allowed
FORBIDDEN_CALLS = {("datetime", "now"), ("datetime", "utcnow"), ("time", "time"), ("date", "today")}


def _imports(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _clock_reads(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and (node.func.value.id, node.func.attr) in FORBIDDEN_CALLS
        ):
            found.append(f"{node.func.value.id}.{node.func.attr}() at line {node.lineno}")
    return found


def test_the_core_has_modules_to_check() -> None:
    assert len(MODULES) >= 10


@pytest.mark.parametrize("module", MODULES, ids=lambda p: str(p.relative_to(DOMAIN)))
def test_core_module_imports_no_io_library(module: Path) -> None:
    imported = _imports(ast.parse(module.read_text()))
    forbidden = set(FORBIDDEN_IMPORTS)
    if module.name not in DECODING_MODULES:
        forbidden.add("orjson")
    assert imported & forbidden == set()


@pytest.mark.parametrize("module", MODULES, ids=lambda p: str(p.relative_to(DOMAIN)))
def test_core_module_reads_no_clock(module: Path) -> None:
    assert _clock_reads(ast.parse(module.read_text())) == []
