"""Real guests under QEMU. One session-scoped fixture builds (or finds) the guest image; bundles
use a busybox-static rootfs made in tmp dirs."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sevbox.guest.image import GuestImage, build_image

BUSYBOX = "/bin/busybox"
APPLETS = (
    "sh", "echo", "cat", "id", "hostname", "true", "false", "sleep", "ls", "touch", "kill", "head",
    "sha256sum", "dd", "wc", "env", "pwd", "mkdir", "stty", "printf", "test", "rm", "grep",
)  # fmt: skip


@pytest.fixture(scope="session")
def guest_image() -> GuestImage:
    return build_image()


def make_rootfs(root: Path) -> Path:
    (root / "bin").mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    for a in APPLETS:
        os.symlink("busybox", root / "bin" / a)
    for d in ("proc", "dev", "sys", "tmp", "work", "data"):
        (root / d).mkdir(exist_ok=True)
    os.chmod(root / "tmp", 0o1777)
    os.chmod(root / "data", 0o777)
    return root


def oci_config(args: list[str], **kw: Any) -> dict[str, Any]:
    process: dict[str, Any] = {
        "terminal": False,
        "user": {"uid": 0, "gid": 0},
        "args": args,
        "env": ["PATH=/bin", "HOME=/"],
        "cwd": "/",
    }
    process.update(kw.pop("process", {}))
    cfg: dict[str, Any] = {
        "ociVersion": "1.0.2",
        "root": {"path": "rootfs"},
        "hostname": "sevbox-test",
        "process": process,
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
    }
    cfg.update(kw)
    return cfg


@pytest.fixture
def make_bundle(tmp_path: Path, guest_image: GuestImage) -> Callable[..., Path]:
    def make(args: list[str], name: str = "bundle", **kw: Any) -> Path:
        bundle = tmp_path / name
        cfg = oci_config(args, **kw)
        root_path = cfg["root"]["path"]
        make_rootfs(bundle if root_path == "." else bundle / root_path)
        (bundle / "config.json").write_text(json.dumps(cfg))
        return bundle

    return make


def qemu_pids_for(path: Path) -> list[int]:
    """QEMU processes whose command line mentions ``path`` (to prove none are left behind)."""
    pids = []
    needle = str(path).encode()
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{d}/cmdline").read_bytes()
        except OSError:
            continue
        if b"qemu-system" in cmd and needle in cmd:
            pids.append(int(d))
    return pids


def wait_no_qemu(path: Path, timeout: float = 5.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        left = qemu_pids_for(path)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)
