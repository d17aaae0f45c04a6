"""Looking for a guest's plaintext in its QEMU process's memory: the host-side half of verify-memory.

AMD's demonstration of SEV dumped pages of the QEMU process (``/proc/<pid>/mem``) and showed plaintext
for a normal VM and only ciphertext for an SEV VM. This module makes that a check. The guest keeps a
fresh random canary C in its private memory and tells the host only ~C (bitwise NOT), so the bytes of
C themselves never cross the shared (unencrypted) channel or bounce buffers: finding C in QEMU's
memory means guest-private memory is readable by the host, i.e. NOT encrypted.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["Hit", "Region", "ScanResult", "invert", "parse_maps", "scan"]

CHUNK = 4 << 20
MIN_REGION = 1 << 20  # guest RAM is one large mapping; skip QEMU's small ones


def invert(data: bytes) -> bytes:
    """Bitwise NOT: how the canary travels over the channel (so its plaintext never does)."""
    return bytes(b ^ 0xFF for b in data)


@dataclass(frozen=True)
class Region:
    start: int
    end: int
    perms: str
    name: str

    @property
    def size(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class Hit:
    address: int  # virtual address in the QEMU process
    region: Region

    @property
    def offset(self) -> int:
        return self.address - self.region.start


@dataclass(frozen=True)
class ScanResult:
    hits: list[Hit]
    scanned: int  # bytes read
    regions: int


def parse_maps(text: str) -> list[Region]:
    """Readable, writable, private or shared memory regions from /proc/PID/maps (no files)."""
    out = []
    for line in text.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 5:
            continue
        try:
            lo, hi = (int(x, 16) for x in parts[0].split("-", 1))
        except ValueError:
            continue
        perms = parts[1]
        name = parts[5].strip() if len(parts) > 5 else ""
        # guest RAM is anonymous (or a memfd/shm backend); a mapped file is not guest RAM
        file_backed = name.startswith("/") and not name.startswith(("/memfd:", "/dev/shm/"))
        if not perms.startswith("rw") or (file_backed and "(deleted)" not in name):
            continue
        if name in ("[vvar]", "[vsyscall]", "[vdso]"):
            continue
        out.append(Region(lo, hi, perms, name))
    return out


def _chunks(fd: int, region: Region, overlap: int) -> Iterator[tuple[int, bytes]]:
    pos = region.start
    while pos < region.end:
        n = min(CHUNK, region.end - pos)
        try:
            data = os.pread(fd, n, pos)
        except OSError:
            pos += n  # unreadable (e.g. guard pages): skip
            continue
        if not data:
            return
        yield pos, data
        pos += max(len(data) - overlap, 1) if len(data) == n and pos + len(data) < region.end else len(data)


def scan(pid: int, needle: bytes, *, min_region: int = MIN_REGION, max_hits: int = 16) -> ScanResult:
    """Search the process's large writable regions for ``needle``. Needs ptrace access (root)."""
    if len(needle) < 16:
        raise ValueError("needle must be at least 16 bytes (a canary, not a word)")
    with open(f"/proc/{pid}/maps") as f:
        regions = [r for r in parse_maps(f.read()) if r.size >= min_region]
    hits: list[Hit] = []
    scanned = 0
    fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY | os.O_CLOEXEC)
    try:
        for region in regions:
            for base, data in _chunks(fd, region, len(needle) - 1):
                scanned += len(data)
                i = data.find(needle)
                while i >= 0 and len(hits) < max_hits:
                    hit = Hit(base + i, region)
                    if hit not in hits:
                        hits.append(hit)
                    i = data.find(needle, i + 1)
    finally:
        os.close(fd)
    return ScanResult(hits=hits, scanned=scanned, regions=len(regions))
