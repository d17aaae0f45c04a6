"""Accelerator choice: the override, the per-boot cache, and the honest probe result."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sevbox.errors import ConfigError
from sevbox.qemu import accel


def test_env_override_wins(tmp_path: Path) -> None:
    c = accel.choose_accel(Path("/nonexistent"), cache=tmp_path / "a.json", env={"SEVBOX_ACCEL": "kvm"})
    assert (c.name, c.reason) == ("kvm", "set by SEVBOX_ACCEL")


def test_bad_override_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="kvm or tcg"):
        accel.choose_accel(Path("/x"), cache=tmp_path / "a.json", env={"SEVBOX_ACCEL": "xen"})


def test_cached_answer_for_this_boot_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accel, "_boot_id", lambda: "boot-1")
    monkeypatch.setattr(accel.os.path, "exists", lambda p: True)
    calls = []
    monkeypatch.setattr(accel, "probe_kvm", lambda k: calls.append(k) or (False, "probe said no"))
    cache = tmp_path / "a.json"
    first = accel.choose_accel(Path("/k"), cache=cache, env={})
    assert first.name == "tcg" and first.reason == "probe said no"
    assert json.loads(cache.read_text())["boot_id"] == "boot-1"
    second = accel.choose_accel(Path("/k"), cache=cache, env={})
    assert second.name == "tcg" and "cached" in second.reason
    assert len(calls) == 1
    monkeypatch.setattr(accel, "_boot_id", lambda: "boot-2")  # a reboot invalidates the answer
    accel.choose_accel(Path("/k"), cache=cache, env={})
    assert len(calls) == 2
