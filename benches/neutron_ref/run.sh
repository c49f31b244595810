#!/usr/bin/env bash
# Run Neutron's OVS firewall driver on the benchmark workloads (see benches/README.md).
# Usage: benches/neutron_ref/run.sh [PRESET ...] [--timeout S] [--seed N] [--dump-flows] ...
# Defaults: p10 p100 p1000, timeout 1800 s per run; appends JSON lines to
# benches/results/neutron.jsonl. Runs niced: the machine is shared.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${NEUTRON_VENV:-$root/build/neutron29-venv}"
"$here/setup.sh" "$venv"
# PYTHONHASHSEED: Neutron iterates sets of strings; a fixed seed makes the call counts repeatable.
export PYTHONHASHSEED="${PYTHONHASHSEED:-0}"
exec nice -n "${NICE:-10}" "$venv/bin/python" "$here/runner.py" "$@"
