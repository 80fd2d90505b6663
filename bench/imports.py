"""CPU seconds a fresh Python process spends importing seismoflow's entry points, with the
installed packages' bytecode (``.pyc``) and without it, in one run.

Every process the test suite starts (pytest-xdist workers, Prefect servers, ``seismoflow``
CLI runs, Dask and Prefect workers) pays these imports. Where ``PYTHONDONTWRITEBYTECODE`` is
set and the environment was installed without ``--compile-bytecode`` (uv's default), Python
compiles every imported module from source in every process. The baseline here forces that:
``PYTHONPYCACHEPREFIX`` points at an empty folder, so no ``.pyc`` is found, and
``PYTHONDONTWRITEBYTECODE=1`` keeps it empty. The other mode uses the environment as
installed (run ``python -m compileall`` or install with ``--compile-bytecode`` first; the
script says how many of the modules it imported had a ``.pyc``).

    .venv/bin/python bench/imports.py [--repeat 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile

MODULES = (
    "seismoflow.cli",
    "seismoflow.flows.ingest",
    "seismoflow.flows.train",
    "prefect.server.api.server",
)

PROBE = """
import importlib, importlib.util, sys
importlib.import_module(sys.argv[1])
have = total = 0
for m in list(sys.modules.values()):
    spec = getattr(m, "__spec__", None)
    if spec is None or not spec.has_location or not str(spec.origin).endswith(".py"):
        continue
    total += 1
    cached = importlib.util.cache_from_source(spec.origin)
    have += __import__("os").path.exists(cached)
print(have, total)
"""


def child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def import_cpu(module: str, env: dict[str, str]) -> tuple[float, str]:
    """CPU seconds of one fresh interpreter importing ``module``; its .pyc count line."""
    before = child_cpu()
    out = subprocess.run(
        [sys.executable, "-c", PROBE, module], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    return child_cpu() - before, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", dest="json_path")
    args = parser.parse_args()
    base = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1"}
    rows = []
    with tempfile.TemporaryDirectory() as empty:
        modes = {"from source": {**base, "PYTHONPYCACHEPREFIX": empty}, "bytecode": base}
        for module in MODULES:
            cpu: dict[str, list[float]] = {m: [] for m in modes}
            pyc = ""
            for _ in range(args.repeat):
                for mode, env in modes.items():  # alternating, so load drifts hit both
                    seconds, line = import_cpu(module, env)
                    cpu[mode].append(seconds)
                    if mode == "bytecode":
                        pyc = line
            row = {
                "module": module,
                **{f"{m} cpu_s": round(statistics.median(v), 2) for m, v in cpu.items()},
                "ratio": round(
                    statistics.median(cpu["from source"]) / statistics.median(cpu["bytecode"]), 2
                ),
                ".pyc found / modules (bytecode mode)": pyc.replace(" ", " / "),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.json_path:
        with open(args.json_path, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
