"""Argument helpers shared by verb modules (parsing and reading at the edge only)."""

from __future__ import annotations

import argparse
from pathlib import Path

from sevbox.errors import UsageError

__all__ = ["int0", "read_bytes"]


def int0(text: str) -> int:
    """An integer in any base Python accepts (0x.., 0o.., 0b.., decimal): an argparse ``type``."""
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def read_bytes(path: str, what: str) -> bytes:
    """A file's bytes, or a one-line UsageError naming the option and the reason."""
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise UsageError(f"cannot read {what} {path}: {err.strerror or err}") from None
