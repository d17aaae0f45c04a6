"""Captured host trees (tests/data/check) copied into tmp_path, with their fakes materialized."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from hostfakes import write_fake_cpuid

DATA = Path(__file__).resolve().parents[2] / "data" / "check"


@pytest.fixture
def tree(tmp_path: Path) -> Callable[[str], Path]:
    made = [0]

    def make(name: str) -> Path:
        made[0] += 1
        root = tmp_path / f"{made[0]}" / name
        shutil.copytree(DATA / name, root)
        fake = root / "fake-cpuid.json"
        if fake.exists():
            raw = json.loads(fake.read_text())
            leaves = {int(k, 16): tuple(int(v, 16) for v in regs) for k, regs in raw.items()}
            write_fake_cpuid(root, leaves)
        return root

    return make
