"""The list of compiled modules names real modules, and a build says what it runs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from pitlane import compiled


@pytest.mark.parametrize("name", compiled.MODULES)
def test_every_compiled_module_has_its_source_where_setup_py_looks(name: str) -> None:
    spec = importlib.util.find_spec(name)

    assert spec is not None
    assert spec.origin is not None
    package_dir = Path(spec.origin).parent
    stem = name.rpartition(".")[2]
    source = (
        package_dir / "__init__.py"
        if spec.submodule_search_locations
        else package_dir / f"{stem}.py"
    )
    assert source.is_file()


@pytest.mark.parametrize(
    ("found", "build"),
    [
        (list(compiled.MODULES), "compiled"),
        (list(compiled.MODULES[:3]), "partly compiled"),
        ([], "source"),
    ],
)
def test_build_says_how_much_of_the_hot_path_is_compiled(
    monkeypatch: pytest.MonkeyPatch, found: list[str], build: str
) -> None:
    monkeypatch.setattr(compiled, "compiled_modules", lambda: found)

    assert compiled.build() == build


def test_compiled_modules_are_those_loaded_from_extensions() -> None:
    loaded = {name: importlib.import_module(name).__file__ or "" for name in compiled.MODULES}

    assert compiled.compiled_modules() == [n for n, f in loaded.items() if f.endswith(".so")]
