"""SEV_STATUS (MSR 0xC0010131): is this machine's memory encrypted, and with which SEV features.

Inside an SEV guest the MSR tells the guest what the hardware enforces for it: bit 0 SEV, bit 1
SEV-ES, bit 2 SEV-SNP, then the SNP features the hypervisor turned on (AMD APM vol. 2, "SEV_STATUS
MSR"; the same bits and names as Linux's ``arch/x86/include/asm/msr-index.h``). On a host, or in a
guest without SEV, reading it either faults (the msr driver returns EIO: not an SEV guest) or gives 0.

Stdlib only and free of sevbox imports, so the guest agent can use it too. Decoding is pure
(:func:`decode_sev_status`); :func:`read_msr` is the one function with effects: it reads 8 bytes at
offset MSR from ``/dev/cpu/N/msr`` (the Linux msr driver's interface) and returns a
:class:`MsrRead` that says what happened rather than raising, because "could not read" is itself an
answer here.
"""

from __future__ import annotations

import errno
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "MSR_SEV_STATUS",
    "SEV_STATUS_BITS",
    "MsrRead",
    "SevStatus",
    "decode_sev_status",
    "read_msr",
]

MSR_SEV_STATUS = 0xC001_0131

# bit -> (name as Linux prints it in "SEV: Status:", what it means)
SEV_STATUS_BITS: dict[int, tuple[str, str]] = {
    0: ("SEV", "memory encryption (SEV) is active"),
    1: ("SEV-ES", "register state is encrypted (SEV-ES)"),
    2: ("SEV-SNP", "secure nested paging (SEV-SNP): integrity protection via the RMP"),
    3: ("vTom", "virtual top of memory: memory below vTOM is private"),
    4: ("ReflectVC", "#VC exceptions are reflected to the hypervisor"),
    5: ("RI", "restricted injection: only #HV may be injected"),
    6: ("AI", "alternate injection: interrupts come through the VMSA"),
    7: ("DebugSwap", "debug registers are swapped on world switch"),
    8: ("NoHostIBS", "the host may not use IBS on this guest"),
    9: ("BTBIsol", "branch target buffer isolation"),
    10: ("VmplSSS", "VMPL supervisor shadow stacks"),
    11: ("SecureTSC", "secure TSC: the hypervisor cannot change the guest's TSC"),
    12: ("VMGExitParam", "VMGEXIT parameter"),
    14: ("IBSVirt", "IBS virtualization"),
    16: ("VMSARegProt", "VMSA register protection"),
    17: ("SMTProt", "SMT protection"),
    18: ("SecureAVIC", "secure AVIC"),
    23: ("IBPBOnEntry", "IBPB on entry"),
}


@dataclass(frozen=True)
class SevStatus:
    """A decoded SEV_STATUS value."""

    value: int

    def has(self, bit: int) -> bool:
        return bool(self.value >> bit & 1)

    @property
    def sev(self) -> bool:
        return self.has(0)

    @property
    def sev_es(self) -> bool:
        return self.has(1)

    @property
    def snp(self) -> bool:
        return self.has(2)

    @property
    def encrypted(self) -> bool:
        return self.sev

    @property
    def mode(self) -> str:
        """The launch security mode: "none", "sev", "sev-es" or "sev-snp"."""
        if self.snp:
            return "sev-snp"
        if self.sev_es:
            return "sev-es"
        if self.sev:
            return "sev"
        return "none"

    @property
    def names(self) -> tuple[str, ...]:
        """Names of the known bits that are set, in bit order (Linux's spelling)."""
        return tuple(name for bit, (name, _) in sorted(SEV_STATUS_BITS.items()) if self.has(bit))

    @property
    def unknown_bits(self) -> tuple[int, ...]:
        """Set bits this decoder has no name for (reserved when it was written)."""
        return tuple(b for b in range(64) if self.has(b) and b not in SEV_STATUS_BITS)

    def bits(self) -> list[dict[str, object]]:
        """Every known bit with its state, for JSON output."""
        return [
            {"bit": bit, "name": name, "set": self.has(bit), "meaning": meaning}
            for bit, (name, meaning) in sorted(SEV_STATUS_BITS.items())
        ]

    def describe(self) -> str:
        if not self.encrypted:
            return f"SEV_STATUS={self.value:#x}: not encrypted (the SEV bit is clear)"
        extra = f"; unknown bits {list(self.unknown_bits)}" if self.unknown_bits else ""
        return f"SEV_STATUS={self.value:#x}: {' '.join(self.names)}{extra}"


def decode_sev_status(value: int) -> SevStatus:
    if not 0 <= value < 1 << 64:
        raise ValueError(f"an MSR value is 64 bits, got {value:#x}")
    return SevStatus(value)


@dataclass(frozen=True)
class MsrRead:
    """What reading one MSR gave: ``value``, or ``error`` with ``reason`` saying why not.

    ``reason`` is one of "ok", "no-device" (no /dev/cpu/N/msr: msr driver absent), "denied"
    (not root), "not-implemented" (the CPU faulted: the MSR does not exist here), "short", "error".
    """

    path: str
    msr: int
    value: int | None
    reason: str
    error: str = ""


def _try_modprobe_msr() -> None:
    try:
        subprocess.run(["modprobe", "msr"], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        pass


def read_msr(msr: int, *, cpu: int = 0, devroot: Path = Path("/dev/cpu"), modprobe: bool = False) -> MsrRead:
    """Read ``msr`` on ``cpu`` through ``devroot/N/msr``. With ``modprobe``, load the msr driver
    first when its device is missing (only sensible on the live machine, as root)."""
    path = devroot / str(cpu) / "msr"
    if modprobe and not path.exists():
        _try_modprobe_msr()
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return MsrRead(str(path), msr, None, "no-device", f"{path} does not exist (msr driver not loaded)")
    except PermissionError as err:
        return MsrRead(str(path), msr, None, "denied", f"cannot open {path}: {err.strerror} (needs root)")
    except OSError as err:
        return MsrRead(str(path), msr, None, "error", f"cannot open {path}: {err.strerror}")
    try:
        data = os.pread(fd, 8, msr)
    except OSError as err:
        if err.errno == errno.EIO:
            return MsrRead(
                str(path), msr, None, "not-implemented", f"reading MSR {msr:#x} faulted (EIO): no such MSR"
            )
        return MsrRead(str(path), msr, None, "error", f"reading MSR {msr:#x}: {err.strerror}")
    finally:
        os.close(fd)
    if len(data) != 8:
        return MsrRead(str(path), msr, None, "short", f"read {len(data)} bytes of MSR {msr:#x}, not 8")
    return MsrRead(str(path), msr, int.from_bytes(data, "little"), "ok")
