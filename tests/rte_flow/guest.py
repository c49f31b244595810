"""A QEMU guest running Debian's own kernel, for the rte_flow tests that need TC flower.

``net_tap`` enforces its rte_flow rules with TC flower, gact and skbedit; the kernel these
machines run has none of them, so ``flow create`` fails on the host whatever the rule. Debian's
``linux-image-amd64`` has them as modules. The fixture therefore:

* downloads that kernel package with ``apt-get download`` and unpacks it with ``dpkg -x`` into
  a cache directory (never installed; ``depmod -b`` indexes its modules there);
* builds a tiny initramfs (the host's busybox and its libraries, the virtio and 9p modules, an
  ``/init`` script) written as a ``newc`` cpio archive by :func:`_cpio`;
* boots ``qemu-system-x86_64`` with plain TCG emulation (KVM is not available to us), the
  host's root shared read-only over 9p (virtfs) and a per-run directory shared read-write;
* the initramfs mounts the host's root, puts tmpfs on ``/run`` and ``/tmp``, and runs the given
  shell script chrooted into it; the script loads the TC modules from the unpacked kernel
  (``modprobe -d``) and writes whatever it wants into the shared directory, which the host
  reads back after the guest powers off.
"""

from __future__ import annotations

import fcntl
import logging
import os
import pwd
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

LOG = logging.getLogger(__name__)

QEMU = shutil.which("qemu-system-x86_64")
CACHE = Path(os.environ.get("SGF_GUEST_CACHE", "/var/tmp/sgflows-guest"))
KERNEL_META = "linux-image-amd64"
# Loaded by the initramfs, in dependency order, so that it can mount the host's root.
BOOT_MODULES = [
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "netfs",
    "fscache",
    "9pnet",
    "9pnet_virtio",
    "9p",
]
# What net_tap's rte_flow needs (tap_flow.c builds prio/ingress qdiscs, flower filters and
# gact/skbedit/mirred/bpf actions), loaded by the guest script with modprobe.
TC_MODULES = [
    "tun",
    "sch_ingress",
    "sch_prio",
    "sch_multiq",
    "cls_flower",
    "cls_bpf",
    "act_gact",
    "act_skbedit",
    "act_mirred",
    "act_bpf",
    "act_pedit",
]

INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /modules.order); do insmod /modules/$m.ko || echo "sgf-guest: insmod $m failed"; done
shared=$(sed -n 's/.*sgf.shared=\\([^ ]*\\).*/\\1/p' /proc/cmdline)
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144 hostroot /newroot
mount -t proc proc /newroot/proc
mount -t sysfs sys /newroot/sys
mount -t devtmpfs dev /newroot/dev
mount -t tmpfs run /newroot/run
mount -t tmpfs tmp /newroot/tmp
# After the tmpfs mounts: a shared directory under /tmp needs its mount point recreated.
mkdir -p /newroot$shared
mount -t 9p -o trans=virtio,version=9p2000.L,rw,msize=262144 shared /newroot$shared
echo "sgf-guest: running $shared/run.sh"
chroot /newroot /bin/sh -c "cd $shared && /bin/sh ./run.sh > ./output.log 2>&1; echo \\$? > ./rc"
sync
echo "sgf-guest: done"
poweroff -f
"""


class GuestError(RuntimeError):
    """The guest could not be prepared or did not run its script."""


@dataclass
class GuestRun:
    """What one guest run left behind: the script's exit code, its output and its directory."""

    rc: int
    output: str
    console: str
    shared: Path
    seconds: float


def _kernel_package() -> str:
    """The versioned kernel package that ``linux-image-amd64`` currently depends on."""
    out = subprocess.run(
        ["apt-cache", "depends", KERNEL_META], capture_output=True, text=True, check=True
    ).stdout
    for line in out.splitlines():
        name = line.strip().removeprefix("Depends: ")
        if name.startswith("linux-image-") and name != KERNEL_META:
            return name
    raise GuestError(f"apt-cache names no kernel behind {KERNEL_META}: {out}")


def _unpack_kernel(cache: Path) -> tuple[Path, str]:
    """Downloads and unpacks Debian's kernel once into ``cache``; returns its root and version."""
    root = cache / "kernel"
    done = cache / "kernel.done"
    if not done.exists():
        package = _kernel_package()
        download = cache / "download"
        shutil.rmtree(download, ignore_errors=True)
        download.mkdir(parents=True)
        # apt drops to the _apt user for downloads; it must be able to write here.
        if _has_user("_apt"):
            shutil.chown(download, user="_apt")
        subprocess.run(["apt-get", "download", "-q", package], cwd=download, check=True)
        (deb,) = download.glob("*.deb")
        shutil.rmtree(root, ignore_errors=True)
        subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True)
        (version,) = [p.name for p in (root / "lib" / "modules").iterdir()]
        subprocess.run(["depmod", "-b", str(root), version], check=True)
        shutil.rmtree(download)
        done.write_text(version)
    return root, done.read_text().strip()


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _library_closure(binary: str) -> list[str]:
    """The shared libraries (and loader) a host binary needs, from ``ldd``."""
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    libs = []
    for line in out.splitlines():
        parts = line.split()
        path = parts[2] if "=>" in parts and len(parts) > 2 else parts[0]
        if path.startswith("/"):
            libs.append(path)
    return libs


def _cpio(entries: list[tuple[str, int, bytes]]) -> bytes:
    """A ``newc`` cpio archive of (name, mode, data) entries (directories have no data)."""
    out = bytearray()

    def add(name: str, mode: int, data: bytes, ino: int) -> None:
        encoded = name.encode() + b"\0"
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0]
        out.extend(b"070701" + b"".join(b"%08X" % f for f in fields) + encoded)
        out.extend(b"\0" * (-len(out) % 4))
        out.extend(data)
        out.extend(b"\0" * (-len(out) % 4))

    for ino, (name, mode, data) in enumerate(entries, start=1):
        add(name, mode, data, ino)
    add("TRAILER!!!", 0, b"", 0)
    return bytes(out)


def _build_initramfs(kernel_root: Path, version: str, target: Path) -> None:
    modules = kernel_root / "lib" / "modules" / version
    directory, regular = 0o040755, 0o100755
    entries: list[tuple[str, int, bytes]] = [
        (d, directory, b"")
        for d in ("bin", "proc", "sys", "dev", "newroot", "modules", "lib", "lib64", "usr")
    ]
    entries.append(("usr/lib", directory, b""))
    entries.append(("usr/lib/x86_64-linux-gnu", directory, b""))
    entries.append(("lib/x86_64-linux-gnu", directory, b""))
    busybox = shutil.which("busybox")
    if busybox is None:
        raise GuestError("busybox is not installed (make deps-system)")
    entries.append(("bin/busybox", regular, Path(busybox).read_bytes()))
    for lib in _library_closure(busybox):
        entries.append((lib.lstrip("/"), regular, Path(lib).read_bytes()))
    order = []
    for name in BOOT_MODULES:
        found = list(modules.rglob(f"{name}.ko"))
        if not found:
            continue  # built in
        entries.append((f"modules/{name}.ko", 0o100644, found[0].read_bytes()))
        order.append(name)
    entries.append(("modules.order", 0o100644, "\n".join(order).encode() + b"\n"))
    entries.append(("init", regular, INIT.encode()))
    target.write_bytes(_cpio(entries))


def prepare(cache: Path = CACHE) -> tuple[Path, Path, Path]:
    """The kernel image, the initramfs and the unpacked kernel root, built once under a lock
    (several test processes may ask at once)."""
    if QEMU is None:
        raise GuestError("qemu-system-x86_64 is not installed (make deps-system)")
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        root, version = _unpack_kernel(cache)
        initramfs = cache / f"initramfs-{version}.cpio"
        if not initramfs.exists():
            _build_initramfs(root, version, initramfs.with_suffix(".tmp"))
            initramfs.with_suffix(".tmp").rename(initramfs)
    return root / "boot" / f"vmlinuz-{version}", initramfs, root


def module_loader(kernel_root: Path) -> str:
    """Shell lines a guest script starts with: load the TC modules from the unpacked kernel."""
    return "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n" + "".join(
        f"modprobe -d {kernel_root} {m} || echo 'sgf-guest: modprobe {m} failed'\n"
        for m in TC_MODULES
    )


def run(script: str, shared: Path, *, timeout: float = 600, memory_mb: int = 1024) -> GuestRun:
    """Boots the guest, runs ``script`` (POSIX sh, cwd = ``shared``) in it and powers it off.

    ``shared`` must be an existing host directory: the guest sees it at the same path,
    read-write, and everything else of the host read-only.
    """
    kernel, initramfs, root = prepare()
    shared = shared.resolve()
    (shared / "run.sh").write_text(module_loader(root) + script)
    (shared / "rc").unlink(missing_ok=True)
    assert QEMU is not None
    command = [
        QEMU,
        "-accel",
        "tcg",
        "-m",
        str(memory_mb),
        # Debian's DPDK needs SSE4.2 and more: the TCG default CPU (qemu64) lacks them.
        "-cpu",
        "max",
        # testpmd wants a forwarding core beside its main one.
        "-smp",
        "2",
        "-nographic",
        "-no-reboot",
        "-nodefaults",
        "-serial",
        "stdio",
        "-kernel",
        str(kernel),
        "-initrd",
        str(initramfs),
        "-append",
        # no_timer_check: on a loaded host the emulated timer can look dead to the kernel's
        # boot check, which then panics ("IO-APIC + timer doesn't work"), as seen at load 17.
        f"console=ttyS0 panic=-1 quiet loglevel=4 no_timer_check sgf.shared={shared}",
        "-virtfs",
        "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
        "-virtfs",
        f"local,path={shared},mount_tag=shared,security_model=none",
    ]
    started = time.monotonic()
    try:
        proc = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise GuestError(f"guest did not finish in {timeout} s: {exc.stdout!r}") from exc
    seconds = time.monotonic() - started
    rc_file = shared / "rc"
    if not rc_file.exists():
        raise GuestError(f"guest ran no script (qemu rc {proc.returncode}):\n{proc.stdout[-4000:]}")
    output_file = shared / "output.log"
    LOG.info("guest run took %.1f s", seconds)
    return GuestRun(
        rc=int(rc_file.read_text().strip() or "-1"),
        output=output_file.read_text(errors="replace") if output_file.exists() else "",
        console=proc.stdout + proc.stderr,
        shared=shared,
        seconds=seconds,
    )
