"""FAKES at the /dev/cpu/N boundary for host-check tests (named as fakes: they stand in for the
Linux cpuid and msr drivers, whose files answer a read at offset LEAF or MSR)."""

from __future__ import annotations

from pathlib import Path


def write_fake_cpuid(root: Path, leaves: dict[int, tuple[int, ...]]) -> None:
    """FAKE /dev/cpu/0/cpuid: a sparse regular file with 16 bytes (EAX..EDX) at offset = leaf."""
    path = root / "dev/cpu/0/cpuid"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("r+b" if path.exists() else "wb") as f:
        for leaf, regs in leaves.items():
            f.seek(leaf)
            f.write(b"".join(r.to_bytes(4, "little") for r in regs))


def write_fake_msr(root: Path, msr: int, value: int, cpu: int = 0) -> Path:
    """FAKE /dev/cpu/N/msr: a sparse regular file holding 8 bytes at offset = MSR number."""
    path = root / f"dev/cpu/{cpu}/msr"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        f.seek(msr)
        f.write(value.to_bytes(8, "little"))
    return path
