#!/usr/bin/env bash
# Create the Neutron reference environment: a venv with a pinned neutron from the package index.
# Never part of the test suite or .ci/run. Usage: benches/neutron_ref/setup.sh [VENV]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${1:-${NEUTRON_VENV:-$root/build/neutron-venv}}"
python="${PYTHON:-python3}"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "neutron venv up to date: $venv"
  exit 0
fi
"$python" - <<'PY'
import sys
if sys.version_info[:2] < (3, 11):
    sys.exit("the Neutron reference needs Python >= 3.11 (neutron 28 supports 3.10-3.12)")
PY
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
# Every package pinned (pip freeze of a working install): the same Neutron code on every run.
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt"
"$venv/bin/python" -W ignore -c "import neutron.agent.linux.openvswitch_firewall.firewall"
echo "$want" > "$stamp"
echo "neutron venv ready: $venv ($("$venv/bin/python" -m pip show neutron | grep '^Version'))"
