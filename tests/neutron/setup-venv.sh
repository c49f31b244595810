#!/usr/bin/env bash
# Create (or reuse) the virtual environment of the Neutron firewall-driver tests: neutron 29.0.0
# from the package index and this checkout's sgflows (editable, so it sees every rebuild of the
# extension). Idempotent: a stamp of the requirements and pyproject.toml makes a second run a
# no-op. Usage: tests/neutron/setup-venv.sh [VENV]   (default build/neutron29-venv)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${1:-${SGFLOWS_NEUTRON_VENV:-$root/build/neutron29-venv}}"
python="${PYTHON:-python3}"
stamp="$venv/.sgflows-stamp"
want="$(cat "$here/requirements.txt" "$root/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check --quiet)
"${pip[@]}" install -r "$here/requirements.txt"
"${pip[@]}" install --no-deps -e "$root"
"$venv/bin/python" -W ignore -c "import neutron.agent.linux.openvswitch_firewall.firewall, sgflows"
echo "$want" > "$stamp"
echo "neutron venv ready: $venv"
