"""``sevbox guest-check``: is memory encryption active in THIS machine (run it inside a guest).

Evidence, strongest first:

1. MSR SEV_STATUS (0xC0010131) read through ``/dev/cpu/0/msr``: what the hardware enforces.
2. The kernel's own words: "Memory Encryption Features active: ..." and "SEV: Status: ..." lines.
3. Guest-side SEV interfaces: ``/dev/sev-guest`` (SNP guest requests), the TSM report directory
   (``/sys/kernel/config/tsm/report``), the EFI secret area (``/sys/kernel/security/secrets/coco``).

The verdict follows the MSR when it could be read; otherwise the kernel's message. With neither,
the answer is "not encrypted" — said plainly, because that is what an unproven guest must assume.
Stdlib only (the guest agent reports the same thing).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sevbox.host.kmsg import MEM_ENCRYPT_ACTIVE, kernel_log, sev_lines
from sevbox.host.msr import MSR_SEV_STATUS, MsrRead, SevStatus, decode_sev_status, read_msr

__all__ = ["GuestReport", "guest_check", "mode_from_kernel"]


@dataclass(frozen=True)
class GuestReport:
    encrypted: bool
    mode: str  # none | sev | sev-es | sev-snp
    basis: str  # "msr", "kernel" or "none": what the verdict rests on
    msr: MsrRead
    status: SevStatus | None
    kernel_lines: tuple[str, ...]
    kernel_source: str
    interfaces: dict[str, bool] = field(default_factory=dict)

    @property
    def summary(self) -> str:
        if not self.encrypted:
            return "not encrypted: SEV is not active, so the host can read this machine's memory"
        how = "SEV_STATUS MSR" if self.basis == "msr" else "the kernel's boot message"
        return f"encrypted: {self.mode} is active (according to {how})"

    def to_json(self) -> dict[str, object]:
        return {
            "encrypted": self.encrypted,
            "mode": self.mode,
            "summary": self.summary,
            "basis": self.basis,
            "sev_status": None
            if self.status is None
            else {
                "msr": f"{MSR_SEV_STATUS:#x}",
                "value": f"{self.status.value:#x}",
                "active": list(self.status.names),
                "unknown_bits": list(self.status.unknown_bits),
                "bits": self.status.bits(),
            },
            "msr_read": {"path": self.msr.path, "result": self.msr.reason, "error": self.msr.error},
            "kernel": {"source": self.kernel_source, "lines": list(self.kernel_lines)},
            "interfaces": self.interfaces,
        }


def mode_from_kernel(lines: list[str]) -> str | None:
    """The mode the kernel says is active, None when it said nothing about it."""
    for ln in lines:
        m = MEM_ENCRYPT_ACTIVE.search(ln)
        if m is None:
            continue
        words = set(re.split(r"[\s,]+", (m.group("features") or m.group("old") or "")))
        if "SEV-SNP" in words:
            return "sev-snp"
        if "SEV-ES" in words:
            return "sev-es"
        if "SEV" in words or "(SEV)" in words:
            return "sev"
        return "none"  # SME only: host memory encryption, not a guest's
    return None


def guest_check(
    sysroot: Path = Path("/"),
    *,
    reader: Callable[[int], MsrRead] | None = None,
) -> GuestReport:
    """Gather the evidence under ``sysroot``. ``reader`` reads an MSR (default: /dev/cpu/0/msr
    under the sysroot, loading the msr driver first on the live machine)."""
    if reader is None:
        live = sysroot == Path("/")

        def reader(msr: int) -> MsrRead:
            return read_msr(msr, devroot=sysroot / "dev" / "cpu", modprobe=live)

    got = reader(MSR_SEV_STATUS)
    status = decode_sev_status(got.value) if got.value is not None else None
    lines, source = kernel_log(sysroot)
    kernel_mode = mode_from_kernel(lines)
    interfaces = {
        "/dev/sev-guest": (sysroot / "dev" / "sev-guest").exists(),
        "/sys/kernel/config/tsm/report": (sysroot / "sys/kernel/config/tsm/report").is_dir(),
        "/sys/kernel/security/secrets/coco": (sysroot / "sys/kernel/security/secrets/coco").is_dir(),
    }
    for p in sorted((sysroot / "sys/kernel/mm").glob("mem_encrypt*")):
        interfaces[f"/sys/kernel/mm/{p.name}"] = True
    if status is not None:
        mode, basis = status.mode, "msr"
    elif kernel_mode is not None:
        mode, basis = kernel_mode, "kernel"
    else:
        mode, basis = "none", "none"
    return GuestReport(
        encrypted=mode != "none",
        mode=mode,
        basis=basis,
        msr=got,
        status=status,
        kernel_lines=tuple(sev_lines(lines)),
        kernel_source=source,
        interfaces=interfaces,
    )
