"""The quick start of docs/agent.md, run as written (issue 16, "what a newcomer stumbled on").

The ``sh`` blocks between the ``quickstart`` markers are concatenated and run by bash in an
empty directory, with this interpreter's ``bin`` first on ``PATH`` (where ``sgflows`` is
installed). One change: the TLS port of the text is replaced by a free one, so parallel runs
on one machine do not collide. The script itself waits until the agent reports ``active`` and
stops both processes; the test checks what a newcomer would see.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[3] / "docs" / "agent.md"
DOC_PORT = "16640"


def quickstart_script() -> str:
    text = DOC.read_text()
    section = text.split("<!-- quickstart:begin -->")[1].split("<!-- quickstart:end -->")[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 4, "the quick start has four sh blocks"
    return "set -e\n" + "\n".join(blocks)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_quick_start_works_verbatim(tmp_path: Path) -> None:
    bindir = Path(sys.executable).parent
    if shutil.which("sgflows", path=str(bindir)) is None:
        pytest.fail(f"no sgflows command next to {sys.executable}: pip install -e '.[agent]'")
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed (Makefile DEB_PACKAGES)")
    script = quickstart_script()
    assert script.count(DOC_PORT) == 2
    (tmp_path / "quickstart.sh").write_text(script.replace(DOC_PORT, str(free_port())))
    env = dict(os.environ, PATH=f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    proc = subprocess.Popen(
        ["bash", "quickstart.sh"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # the script's background jobs die with it on failure
    )
    try:
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    demo = tmp_path / "sgflows-demo"
    assert proc.returncode == 0, f"{out}\n{err}\n{_logs(demo)}"
    assert re.search(r"^compute-1\s+active\s+yes", out, flags=re.M), out
    # Logs went to log_file only: nothing on the terminal but the commands' own output.
    assert " INFO " not in err and "Traceback" not in err, err
    assert "controller ready" in (demo / "log" / "controller.log").read_text()
    assert "agent compute-1 stopped" in (demo / "log" / "agent.log").read_text()
    # The directories the controller made, and private files.
    assert oct((demo / "run").stat().st_mode & 0o777) == oct(0o755)
    assert oct((demo / "lib").stat().st_mode & 0o777) == oct(0o750)
    for private in ("lib/controller.sqlite3", "credentials.json", "compute-1.secret"):
        assert (demo / private).stat().st_mode & 0o077 == 0, private
    assert not (demo / "run" / "controller.sock").exists()


def _logs(demo: Path) -> str:
    return (
        "\n".join(
            f"--- {p.name} ---\n{p.read_text(errors='replace')[-3000:]}"
            for p in sorted((demo / "log").glob("*.log"))
        )
        if (demo / "log").is_dir()
        else ""
    )
