#!/usr/bin/env bash
# The package as a user installs it: build the wheel, install it (without the ml extra) into a
# fresh virtual environment outside the repository, and use it from another folder:
# - only `seismoflow` lands in site-packages (no top-level storage/tasks/flows/deployments);
# - `seismoflow --help`, `seismoflow ingest` and `seismoflow info` work without torch or
#   scikit-learn;
# - `seismoflow deploy` registers deployments whose entrypoints are installed modules.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-$repo/.venv/bin/python}"
work="$(mktemp -d)"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
started=$SECONDS
took() { printf 'wheel: %s (%d s since the start)\n' "$1" $((SECONDS - started)); }

# The Prefect server that `seismoflow ingest` and `deploy` report to is infrastructure, not
# the package under test: it runs from the repository's environment (the same Prefect) and
# boots while the wheel builds and installs, instead of after.
export PREFECT_HOME="$work/prefect" PREFECT_SERVER_ANALYTICS_ENABLED=false
port="$("$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
export PREFECT_API_URL="http://127.0.0.1:$port/api" PREFECT_UI_API_URL="http://127.0.0.1:$port/api"
(cd "$work" && exec "$python" -m prefect server start --host 127.0.0.1 --port "$port") \
  >"$work/server.log" 2>&1 &
server_pid=$!

"$python" -m pip wheel -q --no-deps -w "$work/dist" "$repo" 2>&1 | grep -v "^WARNING: Location" || true
wheel="$(ls "$work"/dist/seismoflow-*.whl)"
took "built $(basename "$wheel")"
python3 -m venv "$work/venv"
# --no-compile: no byte-compiling of every installed module up front (a large share of the
# install's CPU time); what the checks import compiles as it is imported, as it would for a
# user.
# uv (installed beside the repository's environment by .ci/run) resolves and installs the
# wheel's dependencies in seconds; pip is the fallback and gives the same packages.
uv="$(dirname "$python")/uv"
if [ -x "$uv" ]; then
  "$uv" pip install -q --python "$work/venv/bin/python" "$wheel"
else
  "$work/venv/bin/pip" install -q --no-compile "$wheel" 2>&1 | grep -v "^WARNING: Location" || true
fi
took "installed into a fresh venv"
cd "$work"   # nothing of the repository on sys.path from here on
bin="$work/venv/bin"

echo "wheel: top-level names"
"$bin/python" - "$wheel" <<'PY'
import sys, zipfile
names = {n.split("/")[0] for n in zipfile.ZipFile(sys.argv[1]).namelist()}
packages = {n for n in names if not n.endswith((".dist-info", ".data"))}
assert packages == {"seismoflow"}, f"top-level names in the wheel: {sorted(packages)}"
import importlib.util
for name in ("storage", "tasks", "flows", "deployments"):
    assert importlib.util.find_spec(name) is None, f"`import {name}` resolves after install"
for name in ("seismoflow.storage.schema", "seismoflow.flows.reprocess", "seismoflow.deployments"):
    assert importlib.util.find_spec(name) is not None, name
for name in ("torch", "sklearn"):
    assert importlib.util.find_spec(name) is None, f"{name} installed without the ml extra"
print("ok:", sorted(packages))
PY

echo "wheel: seismoflow --help"
"$bin/seismoflow" --help >/dev/null

for _ in $(seq 1 120); do
  curl -sf "$PREFECT_API_URL/health" >/dev/null 2>&1 && break
  sleep 1
done
curl -sf "$PREFECT_API_URL/health" >/dev/null || { tail -40 "$work/server.log"; exit 1; }
took "Prefect server up"

archive="${SEISMOFLOW_TEST_DATA:-$repo/../shared/data}/archive"
if [ -d "$archive" ]; then
  echo "wheel: seismoflow ingest and info (no torch, no scikit-learn)"
  "$bin/seismoflow" ingest --sds "$archive/sds" --stations "$archive/stations.xml.gz" \
    --events "$archive/events.xml" --start 2022-02-02 --end 2022-02-04 --store "$work/s.zarr" \
    --json >"$work/ingest.json"
  "$bin/seismoflow" info --store "$work/s.zarr" --json >"$work/info.json"
  "$bin/python" - "$work/ingest.json" "$work/info.json" <<'PY'
import json, sys
ingest, info = (json.load(open(p)) for p in sys.argv[1:])
assert info["n_channel_days"] > 0 and info["n_samples"] == ingest["samples_written"], info
print("ok:", {k: info[k] for k in ("n_channel_days", "n_samples", "n_traces")})
PY
  took "ingest and info"
elif [ "${SEISMOFLOW_REQUIRE_DATA:-0}" = 1 ]; then
  echo "no real data at $archive (SEISMOFLOW_REQUIRE_DATA=1)" >&2; exit 1
else
  echo "skipped ingest/info: no real data at $archive"
fi

echo "wheel: seismoflow deploy"
"$bin/seismoflow" deploy --store "$work/s.zarr" --models-dir "$work/models" >"$work/deploy.txt"
"$bin/python" - <<'PY'
from prefect.client.orchestration import get_client
with get_client(sync_client=True) as client:
    made = {d.name: d for d in client.read_deployments()}
assert set(made) == {"nightly", "refresh-predictions", "archive", "retrain"}, sorted(made)
for d in made.values():
    assert d.entrypoint.startswith("seismoflow."), d.entrypoint
    assert not d.pull_steps and "/" not in d.entrypoint, (d.entrypoint, d.pull_steps)
print("ok:", sorted(d.entrypoint for d in made.values()))
PY
took "deploy"
echo "wheel checks passed"
