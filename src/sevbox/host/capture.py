"""``sevbox check --capture DIR``: copy what ``sevbox check`` reads into a tree, for ``--sysroot``.

The tree holds only what the check needs, so it can be sent to someone else to diagnose:

* ``proc/cpuinfo``, ``proc/cmdline``, ``sys/module/kvm_amd/parameters/{sev,sev_es,sev_snp}``;
* ``dev/kvm``, ``dev/sev`` as empty files when the devices exist;
* ``dev/kmsg``: only the kernel log lines about SME/SEV (and the "Linux version" line), in
  /dev/kmsg's record format;
* ``usr/share/...``: the last 64 KiB of each OVMF build (the footer table and SEV metadata live
  there), at the same paths;
* ``sevbox-capture/``: ``cpuid.json`` (leaves 0, 0x80000000, 0x8000001F), QEMU's ``--version``,
  ``-object help`` and ``-object sev-guest,help``, the QMP reply to ``query-sev-capabilities``,
  ``virsh domcapabilities``, the SEV PLATFORM_STATUS fields, and ``kvm.json`` (KVM API version and
  the runtime's cached verdict on whether Linux boots under this KVM).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from sevbox.errors import UsageError
from sevbox.host import kmsg
from sevbox.host.probe import (
    CAPTURE_DIR,
    CPUID_LEAVES,
    FIRMWARE_DIRS,
    QEMU,
    _dev_kvm,
    _dev_sev,
    _live_caps,
    _run,
    read_cpuid,
)

__all__ = ["FIRMWARE_TAIL", "capture"]

FIRMWARE_TAIL = 64 * 1024


def _write(dest: Path, rel: str, data: str | bytes, written: list[str]) -> None:
    path = dest / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data)
    else:
        path.write_bytes(data)
    written.append(rel)


def _copy(dest: Path, rel: str, written: list[str]) -> None:
    try:
        data = (Path("/") / rel).read_bytes()
    except OSError:
        return
    _write(dest, rel, data, written)


def capture(dest: Path, *, run_programs: bool = True) -> list[str]:
    """Write the capture of this host into ``dest`` (absent or empty). Returns the files written."""
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise UsageError(f"--capture {dest}: must be a new or empty directory")
    dest.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    for rel in ("proc/cpuinfo", "proc/cmdline"):
        _copy(dest, rel, written)
    params = Path("/sys/module/kvm_amd/parameters")
    if params.parent.is_dir():
        (dest / "sys/module/kvm_amd/parameters").mkdir(parents=True, exist_ok=True)
        for name in ("sev", "sev_es", "sev_snp"):
            _copy(dest, f"sys/module/kvm_amd/parameters/{name}", written)
    for dev in ("kvm", "sev"):
        if Path("/dev", dev).exists():
            _write(dest, f"dev/{dev}", b"", written)
    lines, _ = kmsg.kernel_log()
    keep = [ln for ln in lines if ln.startswith("Linux version")][:1] + kmsg.sev_lines(lines)
    _write(dest, "dev/kmsg", "".join(f"6,{i},0,-;{ln}\n" for i, ln in enumerate(keep)), written)
    try:
        leaves = {
            f"{leaf:#x}": [f"{r:#x}" for r in read_cpuid(Path("/dev/cpu/0/cpuid"), leaf)]
            for leaf in CPUID_LEAVES
        }
        _write(dest, f"{CAPTURE_DIR}/cpuid.json", json.dumps(leaves, indent=1) + "\n", written)
    except OSError:
        pass
    for d in FIRMWARE_DIRS:
        base = Path("/", d)
        if not base.is_dir():
            continue
        for p in sorted(base.iterdir()):
            if p.suffix != ".fd" or "VARS" in p.name.upper() or not p.is_file():
                continue
            if p.is_symlink() and any(p.resolve().is_relative_to(Path("/", o)) for o in FIRMWARE_DIRS):
                continue  # another name for a build captured under its own path
            try:
                with p.open("rb") as f:
                    size = f.seek(0, 2)
                    f.seek(max(0, size - FIRMWARE_TAIL))
                    _write(dest, f"{d}/{p.name}", f.read(), written)
            except OSError:
                continue
    kvm = _dev_kvm(Path("/"), live=True)
    if kvm.kvm_api is not None:
        info = {"api_version": kvm.kvm_api, "boots_linux": kvm.boots_linux, "note": kvm.boots_note}
        _write(dest, f"{CAPTURE_DIR}/kvm.json", json.dumps(info, indent=1) + "\n", written)
    status = _dev_sev(Path("/"), live=True, want_snp=False).status
    if status is not None:
        fields = {
            k: getattr(status, k)
            for k in ("api_major", "api_minor", "state", "flags", "build", "guest_count")
        }
        _write(dest, f"{CAPTURE_DIR}/sev-platform-status.json", json.dumps(fields, indent=1) + "\n", written)
    if run_programs:
        _capture_programs(dest, written)
    return written


def _capture_programs(dest: Path, written: list[str]) -> None:
    qemu = shutil.which(QEMU)
    if qemu is not None:
        for name, argv in (
            ("qemu-version.txt", ["--version"]),
            ("qemu-object-help.txt", ["-object", "help"]),
            ("qemu-sev-guest-help.txt", ["-object", "sev-guest,help"]),
        ):
            rc, out = _run([qemu, *argv])
            if rc == 0:
                _write(dest, f"{CAPTURE_DIR}/{name}", out, written)
        if Path("/dev/kvm").exists():
            caps, err = _live_caps(qemu)
            reply = {"return": dict(caps)} if caps is not None else {"error": {"desc": err}}
            _write(
                dest,
                f"{CAPTURE_DIR}/query-sev-capabilities.json",
                json.dumps(reply, indent=1) + "\n",
                written,
            )
    virsh = shutil.which("virsh")
    if virsh is not None:
        rc, out = _run([virsh, "-c", "qemu:///system", "domcapabilities", "--virttype", "kvm"], 20)
        if rc == 0:
            _write(dest, f"{CAPTURE_DIR}/virsh-domcapabilities.xml", out, written)
