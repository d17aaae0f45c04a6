"""Fail closed on this real host (no SEV): asking for encryption refuses before anything starts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def bundle(tmp: Path, annotations: dict[str, str]) -> Path:
    (tmp / "b" / "rootfs").mkdir(parents=True)
    cfg = {"ociVersion": "1.2.0", "process": {"args": ["true"], "cwd": "/"}, "root": {"path": "rootfs"},
           "annotations": annotations}  # fmt: skip
    (tmp / "b" / "config.json").write_text(json.dumps(cfg))
    return tmp / "b"


def sevbox(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sevbox", *args], capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip


@pytest.mark.parametrize(
    "annotations, needle",
    [
        ({"sevbox.require-encryption": "true"}, "encryption is required but this host can't encrypt"),
        ({"sevbox.launch-security": "sev-snp"}, "launch security sev-snp is not available on this host"),
        ({"sevbox.launch-security": "sev"}, "launch security sev is not available on this host"),
        ({"sevbox.launch-security": "none", "sevbox.require-encryption": "1"}, "refusing to run unencrypted"),
    ],
)
@pytest.mark.parametrize("verb", ["create", "run"])
def test_refuses_before_starting_anything(tmp_path: Path, annotations: dict[str, str], needle: str,
                                          verb: str) -> None:  # fmt: skip
    b = bundle(tmp_path, annotations)
    root = tmp_path / "state"
    r = sevbox("--root", str(root), verb, "--bundle", str(b), "c1")
    assert r.returncode == 1, r.stderr
    assert needle in r.stderr and "Traceback" not in r.stderr
    if "sev" in needle or "required" in needle:
        assert "sevbox check" in r.stderr
    assert not (root / "c1").exists()


def test_config_file_requirement_is_honoured(tmp_path: Path) -> None:
    b = bundle(tmp_path, {"sevbox.require-encryption": "false"})  # may not loosen the host's rule
    cfg = tmp_path / "config.toml"
    cfg.write_text("require_encryption = true\n")
    r = sevbox("--config", str(cfg), "--root", str(tmp_path / "state"), "create", "--bundle", str(b), "c2")
    assert r.returncode == 1 and "encryption is required" in r.stderr
