"""Type-check the package and check its layers, as it installs: ``seismoflow.storage`` is
the folder ``storage/``.

mypy and import-linter map modules to files by folder names and know nothing of setuptools'
``package-dir``: they would see ``storage/`` as a top-level ``storage`` package and every
import of ``seismoflow.storage`` as missing. This builds a tree of links in the installed
layout (``build/typecheck/seismoflow/storage -> storage/``) from ``pyproject.toml`` and runs
mypy and ``lint-imports`` (the contracts in ``pyproject.toml``) on it; the files are the
repository's own, so errors point at them through the links.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TREE = ROOT / "build" / "typecheck"


def build_tree() -> Path:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping: dict[str, str] = config["package-dir"]
    shutil.rmtree(TREE, ignore_errors=True)
    for package, folder in mapping.items():
        target = TREE.joinpath(*package.split("."))
        if package == "seismoflow":
            target.mkdir(parents=True)
            for entry in (ROOT / folder).iterdir():
                if entry.name != "__pycache__":
                    (target / entry.name).symlink_to(entry)
        else:
            target.symlink_to(ROOT / folder, target_is_directory=True)
    return TREE


def main() -> int:
    tree = build_tree()
    config = str(ROOT / "pyproject.toml")
    mypy = [sys.executable, "-m", "mypy", "--config-file", config, "-p", "seismoflow"]
    if subprocess.call(mypy, cwd=tree):
        return 1
    lint_imports = Path(sys.executable).with_name("lint-imports")
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.call([str(lint_imports), "--no-cache", config], cwd=tree, env=env)


if __name__ == "__main__":
    sys.exit(main())
