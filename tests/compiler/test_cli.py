"""The `sgflows` command line, run as a user runs it: a subprocess, exit codes, no tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgpack
import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "two-tier.json"


def sgflows(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    raw = subprocess.run(
        [sys.executable, "-m", "sgflows", *args],
        input=stdin,
        capture_output=True,
        timeout=60,
    )
    proc = subprocess.CompletedProcess(
        raw.args,
        raw.returncode,
        raw.stdout.decode("utf-8", "replace"),
        raw.stderr.decode("utf-8", "replace"),
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def write(tmp_path: Path, model: Any, name: str = "model.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(model))
    return path


def test_compile_to_file_with_summary(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "flows.txt"
    proc = sgflows("compile", str(EXAMPLE), "-o", str(out), "--summary")
    assert proc.returncode == 0, proc.stderr
    assert "ports: 6 (4 filtered)" in proc.stdout
    assert "egress_base" in proc.stdout and "flows per table:" in proc.stdout
    lines = out.read_text().splitlines()
    assert lines and all(line.startswith("cookie=") for line in lines)
    assert f"flows: {len(lines)} " in proc.stdout


def test_compile_stdin_to_stdout_json(example: dict[str, Any]) -> None:
    proc = sgflows("compile", "-", "--format", "json", stdin=json.dumps(example).encode())
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["stats"]["flows"] == len(doc["flows"])
    assert doc["cookie"] == 0x736766


def test_msgpack_file(tmp_path: Path, example: dict[str, Any]) -> None:
    path = tmp_path / "model.msgpack"
    path.write_bytes(msgpack.packb(example))
    a = sgflows("compile", str(path))
    b = sgflows("compile", str(EXAMPLE))
    assert a.returncode == b.returncode == 0
    assert a.stdout == b.stdout


def test_options(small: dict[str, Any], tmp_path: Path) -> None:
    path = write(tmp_path, small)
    proc = sgflows(
        "compile", str(path), "--cookie", "0xbeef", "--no-entry-flow", "--table", "normal=95"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("cookie=0xbeef,")
    assert "table=0," not in proc.stdout and "table=95,priority=0 actions=NORMAL" in proc.stdout


def test_every_error_listed_exit_2(small: dict[str, Any], tmp_path: Path) -> None:
    small["security_groups"]["web"]["rules"] = [
        {"direction": "ingress", "protocol": "tcp", "port_range_min": 80, "port_range_max": 22},
        {"direction": "ingress", "protocol": 999},
    ]
    small["ports"].append(dict(small["ports"][0], id="p2", mac_address="fa:16:3e:00:00:02"))
    path = write(tmp_path, small)
    proc = sgflows("compile", str(path))
    assert proc.returncode == 2
    assert "3 problem(s)" in proc.stderr
    assert "security_groups.web.rules[0]: port_range_min 80 > port_range_max 22" in proc.stderr
    assert "security_groups.web.rules[1].protocol: protocol number 999 outside 0-255" in proc.stderr
    assert 'ports.p2.ofport: OpenFlow port 1 is also used by port "p1"' in proc.stderr
    assert proc.stdout == ""


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"{not json", "cannot decode the model as JSON"),
        (b"\xc1", "cannot decode the model as msgpack"),
        (b"[1, 2]", "expected a mapping, got a list"),
    ],
)
def test_undecodable_input(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "bad"
    path.write_bytes(content)
    proc = sgflows("compile", str(path))
    assert proc.returncode == 2
    assert expected in proc.stderr


def test_flow_cap_message(tmp_path: Path) -> None:
    proc = sgflows("compile", str(EXAMPLE), "--max-flows", "20")
    assert proc.returncode == 2
    assert "more than 20 flows" in proc.stderr


def test_missing_file_and_bad_options(tmp_path: Path) -> None:
    proc = sgflows("compile", str(tmp_path / "absent.json"))
    assert proc.returncode == 1 and "cannot read" in proc.stderr
    proc = sgflows("compile", str(EXAMPLE), "--cookie", "cookie-monster")
    assert proc.returncode == 2 and "--cookie" in proc.stderr
    proc = sgflows("compile", str(EXAMPLE), "--table", "nope=3")
    assert proc.returncode == 2 and "--table" in proc.stderr
    proc = sgflows("compile", str(EXAMPLE), "-o", str(tmp_path))
    assert proc.returncode == 2


def test_validate(tmp_path: Path, small: dict[str, Any]) -> None:
    proc = sgflows("validate", str(EXAMPLE))
    assert proc.returncode == 0
    assert "valid: 6 ports, 3 security groups (1 stateless), 15 rules" in proc.stdout
    small["ports"][0]["security_groups"] = ["ghost"]
    proc = sgflows("validate", str(write(tmp_path, small)))
    assert proc.returncode == 2
    assert 'unknown security group "ghost"' in proc.stderr


def test_widening_warns(tmp_path: Path, small: dict[str, Any]) -> None:
    small["security_groups"]["web"]["rules"] = [
        {"direction": "ingress", "protocol": "udplite", "port_range_min": 5}
    ]
    path = write(tmp_path, small)
    assert sgflows("compile", str(path)).returncode == 2
    proc = sgflows("compile", str(path), "--widen-unmatchable-port-ranges")
    assert proc.returncode == 0
    assert "warning:" in proc.stderr and "widened" in proc.stderr


def test_help_and_version() -> None:
    proc = sgflows("--help")
    assert proc.returncode == 0 and "compile" in proc.stdout and "Examples:" in proc.stdout
    proc = sgflows("compile", "--help")
    assert proc.returncode == 0 and "--max-flows" in proc.stdout
    proc = sgflows("--version")
    assert proc.returncode == 0 and "sgflows" in proc.stdout


def test_agent_commands_are_registered() -> None:
    proc = sgflows("--help")
    for name in ("agent", "controller", "status", "trace"):
        assert f"  {name} " in proc.stdout, name
    assert sgflows("agent", "--help").returncode == 0


def test_diff_command(tmp_path: Path, example: dict[str, Any]) -> None:
    new = json.loads(json.dumps(example))
    new["security_groups"]["web"]["rules"].append(
        {"direction": "ingress", "protocol": "udp", "port_range_min": 9999}
    )
    path = write(tmp_path, new, "new.json")
    proc = sgflows("diff", str(EXAMPLE), str(path))
    assert proc.returncode == 0, proc.stderr
    assert "2 added, 0 modified, 0 removed" in proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 2 and all(line.startswith("flow add cookie=") for line in lines)
    assert all("udp_dst=9999" in line for line in lines)
    same = sgflows("diff", str(EXAMPLE), str(EXAMPLE))
    assert same.stdout == "" and "0 added, 0 modified, 0 removed" in same.stderr


def test_diff_exit_code_and_summary(tmp_path: Path, example: dict[str, Any]) -> None:
    new = json.loads(json.dumps(example))
    new["security_groups"]["db"]["rules"].append(
        {"direction": "ingress", "protocol": "tcp", "port_range_min": 6432}
    )
    path = write(tmp_path, new, "new.json")
    changed = sgflows("diff", "--exit-code", str(EXAMPLE), str(path))
    assert changed.returncode == 1, changed.stderr
    assert "ports: db-1; groups: db" in changed.stderr  # db-1 alone uses that policy
    same = sgflows("diff", "--exit-code", str(EXAMPLE), str(EXAMPLE))
    assert same.returncode == 0 and "groups:" not in same.stderr


def test_json_output_with_rule_fates(tmp_path: Path, small: dict[str, Any]) -> None:
    # A duplicate rule in a second group: the stats explain it, and JSON carries that.
    small["security_groups"]["copy"] = json.loads(json.dumps(small["security_groups"]["web"]))
    small["ports"][0]["security_groups"] = ["web", "copy"]
    proc = sgflows("compile", str(write(tmp_path, small)), "--format", "json", "--explain")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["stats"]["rule_fates"] == {"web[0]": ["subsumed by copy[0]"]}
    assert "subsumed by copy[0]" in proc.stderr


def test_options_of_the_other_target_are_refused() -> None:
    proc = sgflows("compile", str(EXAMPLE), "--profile", "mlx5")
    assert proc.returncode == 2 and "--profile applies to --target rte_flow only" in proc.stderr
    proc = sgflows("compile", str(EXAMPLE), "--target", "rte_flow", "--cookie", "5")
    assert proc.returncode == 2 and "--cookie applies to --target openflow only" in proc.stderr


def test_main_returns_to_a_program_that_calls_it(tmp_path: Path) -> None:
    # The command line may end its process without freeing a compile's result; a program
    # that calls `main` must get its exit code back and carry on.
    out = tmp_path / "flows.txt"
    script = (
        "import atexit, sys\n"
        "from sgflows.cli import main\n"
        "atexit.register(lambda: print('atexit ran'))\n"
        f"code = main(['compile', {str(EXAMPLE)!r}, '-o', {str(out)!r}])\n"
        "print('main returned', code)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["main returned 0", "atexit ran"]
    assert out.read_text().startswith("cookie=")


def test_the_command_under_a_profiler_exits_normally(tmp_path: Path) -> None:
    # cProfile writes its data at the normal exit: the command must not skip it.
    out, prof = tmp_path / "flows.txt", tmp_path / "prof.out"
    argv = ["-m", "cProfile", "-o", str(prof), "-m", "sgflows", "compile", str(EXAMPLE)]
    proc = subprocess.run(
        [sys.executable, *argv, "-o", str(out)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert prof.stat().st_size > 0 and out.read_text().startswith("cookie=")
