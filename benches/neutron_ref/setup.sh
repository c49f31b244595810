#!/usr/bin/env bash
# The Neutron reference runs in the project's one Neutron environment: neutron==29.0.0 (pinned in
# tests/neutron/requirements.txt) plus this checkout's sgflows, made by tests/neutron/setup-venv.sh
# (`make deps-neutron`; a no-op when up to date). Until issue 18 it had its own venv pinned to
# neutron 28.0.2; the records in benches/results/neutron.jsonl name the version of each run.
# Never part of .ci/run. Usage: benches/neutron_ref/setup.sh [VENV]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
exec "$root/tests/neutron/setup-venv.sh" "${1:-${NEUTRON_VENV:-$root/build/neutron29-venv}}"
