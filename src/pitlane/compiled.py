"""Which of pitlane's modules run compiled: the build a figure or a report is about.

`setup.py` compiles `MODULES` with mypyc when asked to (`PITLANE_COMPILE=1`): the
batch handler and the domain core it calls, less the pydantic models (`events`,
`outputs`, `view`), which mypyc cannot compile and whose validation already runs in
compiled code. The source stays the one implementation; a compiled build runs it
faster. `setup.py` reads this file on its own, before pitlane is installed, so it
imports nothing of pitlane's.
"""

from __future__ import annotations

import importlib

MODULES: tuple[str, ...] = (
    "pitlane.adapters.redis_cluster_store",
    "pitlane.adapters.redis_store",
    "pitlane.domain.apply",
    "pitlane.domain.contact_policy",
    "pitlane.domain.decay",
    "pitlane.domain.decide",
    "pitlane.domain.dedupe",
    "pitlane.domain.entities",
    "pitlane.domain.profile",
    "pitlane.domain.routing",
    "pitlane.domain.triggers",
    "pitlane.domain.triggers.abandoned_configuration",
    "pitlane.domain.triggers.service_due",
    "pitlane.ingest",
)


def compiled_modules() -> list[str]:
    """The modules of `MODULES` that are imported from a compiled extension."""
    return [
        name
        for name in MODULES
        if not (importlib.import_module(name).__file__ or "").endswith(".py")
    ]


def build() -> str:
    """`compiled`, `source`, or `partly compiled` (a stale or mixed install)."""
    found = len(compiled_modules())
    if found == len(MODULES):
        return "compiled"
    return "partly compiled" if found else "source"
