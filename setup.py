"""Build hook: with `PITLANE_COMPILE=1`, the hot path is compiled to C by mypyc.

The batch handler and the domain core it calls are plain, strictly typed Python;
compiled, a worker spends 13 to 23 % less CPU per event (docs/benchmarks.md). The
source stays the only implementation: a compiled build runs the same code, and the
test suite runs against both. Compiling needs mypy and the runtime dependencies
importable (mypy reads their types), so it is done without build isolation:

    pip install '.[compile]'
    PITLANE_COMPILE=1 pip install --no-build-isolation --no-deps --force-reinstall .

(the Dockerfile does this; `scripts/compiled.sh` builds the same beside a development
install, for the tests and the benchmarks). Editable and ordinary installs without
the variable stay pure Python.
"""

from __future__ import annotations

import os
import runpy
from pathlib import Path

from setuptools import setup


def _sources() -> list[str]:
    """The source files of `pitlane.compiled.MODULES`, read without importing pitlane."""
    names = runpy.run_path("src/pitlane/compiled.py")["MODULES"]
    paths = [Path("src", *name.split(".")) for name in names]
    return [
        str(path / "__init__.py" if path.is_dir() else path.with_suffix(".py")) for path in paths
    ]


def _extensions() -> list[object]:
    if os.environ.get("PITLANE_COMPILE") != "1":
        return []
    from mypyc.build import mypycify

    return list(mypycify(_sources(), opt_level="3"))


setup(ext_modules=_extensions())
