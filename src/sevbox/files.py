"""Small file helpers shared by the CLI and the runtime (effects live here, not in ``sevbox.sev``)."""

from __future__ import annotations

import hashlib
import os

__all__ = ["sha256_file"]

CHUNK = 1 << 22  # 4 MiB reads: few syscalls, little memory


def sha256_file(path: str | os.PathLike[str]) -> bytes:
    """SHA-256 of a file's bytes, read in large chunks into one reused buffer. Raises OSError."""
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.digest()
