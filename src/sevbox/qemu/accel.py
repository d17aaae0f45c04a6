"""Which accelerator: KVM where it really works, else TCG; and why.

``/dev/kvm`` opening is not enough: on some hosts (a paravirtual KVM without svm/vmx) a real-mode
guest runs but a Linux guest never prints its first console line. So the probe boots the guest
kernel under KVM and waits a few seconds for its first console line. The answer is cached per host
boot (``/proc/sys/kernel/random/boot_id``) in ``data_dir()/accel.json``. ``SEVBOX_ACCEL=kvm|tcg``
overrides everything.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from sevbox import pins
from sevbox.errors import ConfigError

__all__ = ["AccelChoice", "choose_accel", "probe_kvm"]

ENV = "SEVBOX_ACCEL"
PROBE_TIMEOUT = 6.0
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


@dataclass(frozen=True)
class AccelChoice:
    name: str  # "kvm" | "tcg"
    reason: str


def probe_kvm(
    kernel: Path, *, timeout: float = PROBE_TIMEOUT, qemu: str = "qemu-system-x86_64"
) -> tuple[bool, str]:
    """Boot ``kernel`` (an ELF vmlinux) under KVM with no initrd; True if Linux prints to the
    console within ``timeout`` seconds."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError as err:
        return False, f"/dev/kvm cannot be opened ({err.strerror})"
    os.close(fd)
    argv = [
        qemu, "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-machine", "microvm", "-accel", "kvm", "-cpu", "host", "-m", "128",
        "-kernel", str(kernel), "-append", "console=ttyS0 earlyprintk=ttyS0 panic=-1 reboot=t",
        "-serial", "stdio",
    ]  # fmt: skip
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        if proc.stdout is None:
            return False, "no pipe to the probe's console"
        seen = b""
        while time.monotonic() - start < timeout:
            r, _, _ = select.select([proc.stdout], [], [], 0.1)
            if r:
                chunk = os.read(proc.stdout.fileno(), 4096)
                if not chunk:
                    break
                seen += chunk
                if b"Linux version" in seen:
                    return True, f"a Linux guest booted under KVM in {time.monotonic() - start:.1f}s"
        msg = ""
        if proc.poll() is not None and proc.stderr is not None:
            msg = proc.stderr.read(2000).decode(errors="replace").strip()
        why = f": {msg.splitlines()[-1]}" if msg else ""
        return False, f"/dev/kvm opens but a Linux guest printed nothing under KVM in {timeout:.0f}s{why}"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for f in (proc.stdout, proc.stderr):
            if f is not None:
                f.close()


def _boot_id() -> str:
    try:
        return BOOT_ID.read_text().strip()
    except OSError:
        return ""


def choose_accel(
    kernel: Path, *, cache: Path | None = None, env: dict[str, str] | None = None
) -> AccelChoice:
    environ = os.environ if env is None else env
    forced = environ.get(ENV, "").strip()
    if forced:
        if forced not in ("kvm", "tcg"):
            raise ConfigError(f"{ENV}={forced!r}: expected kvm or tcg")
        return AccelChoice(forced, f"set by {ENV}")
    if not os.path.exists("/dev/kvm"):
        return AccelChoice("tcg", "no /dev/kvm on this host")
    cache = cache or pins.data_dir() / "accel.json"
    boot = _boot_id()
    try:
        saved = json.loads(cache.read_text())
        if boot and saved.get("boot_id") == boot and saved.get("name") in ("kvm", "tcg"):
            return AccelChoice(saved["name"], str(saved.get("reason", "")) + " (cached for this boot)")
    except (OSError, ValueError, AttributeError):
        pass
    ok, reason = probe_kvm(kernel)
    choice = AccelChoice("kvm" if ok else "tcg", reason)
    if boot:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"boot_id": boot, "name": choice.name, "reason": reason}))
            tmp.replace(cache)
        except OSError:
            pass
    return choice
