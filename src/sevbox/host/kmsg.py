"""The kernel's log, as text lines, from ``/dev/kmsg`` (or ``dmesg``), under a sysroot.

``/dev/kmsg`` gives one record per read: ``PRIORITY,SEQ,USEC,FLAGS;MESSAGE`` (Documentation/ABI/
testing/dev-kmsg); continuation lines start with a space and are dropped. A captured tree may hold
``dev/kmsg`` as a regular file in the same format, or plain lines (taken whole). Stdlib only.
"""

from __future__ import annotations

import errno
import os
import re
import subprocess
from pathlib import Path

__all__ = ["MEM_ENCRYPT_ACTIVE", "kernel_log", "parse_kmsg", "sev_lines"]

# "Memory Encryption Features active: AMD SEV SEV-ES SEV-SNP" (6.x), "AMD Memory Encryption Features
# active: SEV SEV-ES" (5.x), "AMD Secure Encrypted Virtualization (SEV) active" (4.x/5.0).
MEM_ENCRYPT_ACTIVE = re.compile(
    r"Memory Encryption Features active:(?P<features>.*)$|(?P<old>AMD Secure Encrypted Virtualization"
    r" \(SEV\) active|AMD Secure Memory Encryption \(SME\) active)"
)
_SEV_WORDS = re.compile(
    r"\bSEV\b|\bSEV-ES\b|\bSEV-SNP\b|\bSME\b|Memory Encryption|\bsev\b|\bccp\b.*\bsev", re.I
)


def parse_kmsg(data: str) -> list[str]:
    lines = []
    for raw in data.splitlines():
        if not raw or raw.startswith(" "):
            continue
        head, sep, msg = raw.partition(";")
        if sep and re.fullmatch(r"\d+,\d+,\d+,[^;]*", head):
            lines.append(msg)
        else:
            lines.append(raw)
    return lines


def _read_kmsg(path: Path) -> str | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    chunks: list[bytes] = []
    try:
        if not path.is_char_device():
            while block := os.read(fd, 1 << 16):
                chunks.append(block)
        else:
            while True:
                try:
                    rec = os.read(fd, 8192)
                except OSError as err:
                    if err.errno == errno.EPIPE:  # overwritten record: skip it
                        continue
                    break  # EAGAIN: end of the buffer
                if not rec:
                    break
                chunks.append(rec)
    finally:
        os.close(fd)
    return b"".join(chunks).decode("utf-8", "replace")


def kernel_log(sysroot: Path = Path("/")) -> tuple[list[str], str]:
    """(lines, where they came from). Empty when the log cannot be read."""
    path = sysroot / "dev" / "kmsg"
    text = _read_kmsg(path)
    if text is not None:
        return parse_kmsg(text), str(path)
    if sysroot == Path("/"):
        try:
            r = subprocess.run(["dmesg"], capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.SubprocessError):
            return [], "unreadable"
        if r.returncode == 0:
            return [re.sub(r"^\[[^\]]*\]\s*", "", ln) for ln in r.stdout.splitlines()], "dmesg"
    return [], "unreadable"


def sev_lines(lines: list[str]) -> list[str]:
    """The log lines about SME/SEV (for showing as evidence)."""
    return [ln.strip() for ln in lines if _SEV_WORDS.search(ln)]
