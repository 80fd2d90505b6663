"""The store is written and read through zarr's public API only: no module imports
``zarr.core`` (zarr's internals, which change between minor releases) and nothing reaches
for an underscore attribute of a zarr object."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = ("seismoflow", "storage", "tasks", "flows", "deployments", "bench")
# zarr objects in our code are named like these; a private attribute on one is refused
ZARR_NAMES = ("zarr", "root", "group", "store", "arr", "array", "wave")


def _sources() -> list[Path]:
    return sorted(p for d in PACKAGE_DIRS for p in (REPO / d).rglob("*.py"))


def test_no_zarr_internals() -> None:
    offenders = []
    for path in _sources():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("zarr.core"):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno} from {node.module}")
            elif isinstance(node, ast.Import):
                offenders += [
                    f"{path.relative_to(REPO)}:{node.lineno} import {a.name}"
                    for a in node.names
                    if a.name.startswith("zarr.core")
                ]
            elif (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and isinstance(node.value, ast.Name)
                and node.value.id.lower().endswith(ZARR_NAMES)
            ):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno} .{node.attr}")
    assert not offenders, offenders
    assert len(_sources()) > 50
