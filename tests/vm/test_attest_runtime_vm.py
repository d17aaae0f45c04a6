"""`sevbox attest measurement | inject | expected ID` against a real container (TCG, no SEV): the real
QEMU's answers come out as one clear error line each."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests.unit.cli.test_attest_runtime import REAL_QEMU_NO_SEV
from tests.unit.runtime.conftest import become_subreaper

from sevbox.errors import ContainerError
from sevbox.runtime.container import Container
from sevbox.runtime.store import Store

pytestmark = pytest.mark.vm
ARGS = {"sev-inject-launch-secret": {"packet-header": "AAAA", "secret": "AAAA"}}


def sevbox(root: Path, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    kw.setdefault("capture_output", "stdout" not in kw)
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        [sys.executable, "-m", "sevbox", "--root", str(root), *args],
        timeout=180,
        check=False,
        text=True,
        **kw,
    )


def test_attest_verbs_on_a_real_unencrypted_container(
    make_bundle: Callable[..., Path], tmp_path: Path
) -> None:
    become_subreaper()
    root = tmp_path / "state"
    bundle = make_bundle(["sleep", "1000"])
    r = sevbox(root, "create", "--bundle", str(bundle), "at1",
               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    assert r.returncode == 0
    try:
        r = sevbox(root, "attest", "measurement", "at1")
        assert r.returncode == 1 and r.stdout == "" and r.stderr.count("\n") == 1, r.stderr
        assert "runs without SEV" in r.stderr and "launch security none" in r.stderr
        (tmp_path / "h").write_bytes(bytes(52))
        (tmp_path / "p").write_bytes(bytes(32))
        r = sevbox(
            root, "attest", "inject", "at1", "--header", str(tmp_path / "h"), "--payload", str(tmp_path / "p")
        )
        assert r.returncode == 1 and r.stderr.count("\n") == 1 and "runs without SEV" in r.stderr
        r = sevbox(root, "attest", "expected", "at1")
        assert r.returncode == 2 and "without memory encryption" in r.stderr
        # the real QEMU says what the FAKE table in tests/unit/cli/test_attest_runtime.py says it does
        c = Container.load(Store(root), "at1")
        for command, desc in REAL_QEMU_NO_SEV["errors"].items():
            with pytest.raises(ContainerError, match=desc):
                c.ask({"op": "qmp", "command": command, "arguments": ARGS.get(command)})
        assert (
            c.ask({"op": "qmp", "command": "query-sev"})["return"] == REAL_QEMU_NO_SEV["replies"]["query-sev"]
        )
        assert sevbox(root, "state", "at1").returncode == 0  # the container is untouched
    finally:
        sevbox(root, "delete", "--force", "at1")
