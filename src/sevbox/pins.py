"""The pinned versions (pins.env at the project root, shipped in the package) and the data dir.

``scripts/setup`` reads the same file, so the shell set-up and the Python code agree on one pin.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

__all__ = ["data_dir", "pins"]


@cache
def pins() -> dict[str, str]:
    here = Path(__file__).resolve()
    for candidate in (here.parent / "data" / "pins.env", here.parents[2] / "pins.env"):
        if candidate.is_file():
            out: dict[str, str] = {}
            for line in candidate.read_text().splitlines():
                line = line.strip()
                if line and not line.startswith("#") and "=" in line:
                    key, value = line.split("=", 1)
                    out[key] = value
            return out
    return {}


def data_dir() -> Path:
    """Where set-up puts the guest kernel and the runtime caches guest images."""
    return Path(os.environ.get("SEVBOX_DATA_DIR", "/var/lib/sevbox"))
