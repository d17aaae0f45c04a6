"""One QEMU process's lifecycle, with a stand-in 'qemu' script (no guest boots here): the child
gets its inherited sockets, dies with close(), and leaves nothing behind."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from sevbox.errors import VmError
from sevbox.qemu.argv import VmSpec
from sevbox.qemu.machine import Machine

FAKE = """#!/bin/bash
echo "fake qemu: $*" >&2
case "$*" in *die-now*) echo "qemu-system-x86_64: -device bogus: not found" >&2; exit 1;; esac
# echo on the agent channel (socket,id=agent,fd=N; bash: dash cannot redirect above fd 9)
fd=$(echo "$*" | sed -n 's/.*socket,id=agent,fd=\\([0-9]*\\).*/\\1/p')
printf 'hello' >&$fd
exec sleep 60
"""


@pytest.fixture
def fake_qemu(tmp_path: Path) -> str:
    p = tmp_path / "qemu"
    p.write_text(FAKE)
    p.chmod(p.stat().st_mode | stat.S_IXUSR)
    return str(p)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_launch_talk_close(fake_qemu: str) -> None:
    m = Machine(VmSpec(kernel=Path("/k")), name="t1", qemu=fake_qemu)
    chan = m.launch()
    try:
        chan.settimeout(10)
        assert chan.recv(5) == b"hello"  # the child got the channel socket, inherited
        pid = m.pid
        assert m.is_running() and _alive(pid)
        assert "fake qemu" in m.logs()
        assert "/proc/self/fd/" in str(m.console_log)  # an unlinked file: nothing on disk
    finally:
        chan.close()
        m.close()
    assert not _alive(pid)
    m.close()  # idempotent


def test_context_manager_cleans_up_on_error(fake_qemu: str) -> None:
    with pytest.raises(RuntimeError), Machine(VmSpec(kernel=Path("/k")), qemu=fake_qemu) as m:
        m.launch().close()
        pid = m.pid
        raise RuntimeError("boom")
    assert not _alive(pid)


def test_failed_qemu_error_carries_argv_and_log(fake_qemu: str, tmp_path: Path) -> None:
    m = Machine(VmSpec(kernel=Path("/k"), cmdline="die-now"), qemu=fake_qemu, log_dir=tmp_path / "logs")
    m.launch().close()
    assert m.wait(10) == 1
    err = m.error("QEMU failed")
    assert isinstance(err, VmError)
    assert err.returncode == 1 and err.argv[0] == fake_qemu
    assert "-device bogus: not found" in err.log
    m.close()
    assert (tmp_path / "logs" / "vm.qemu.log").exists()  # kept: the caller asked for a log dir


def test_missing_qemu_binary(tmp_path: Path) -> None:
    m = Machine(VmSpec(kernel=Path("/k")), qemu=str(tmp_path / "nope"))
    with pytest.raises(VmError, match="cannot run QEMU"):
        m.launch()


def test_no_fd_leak_across_launch_and_close(fake_qemu: str) -> None:
    before = set(os.listdir("/proc/self/fd"))
    m = Machine(VmSpec(kernel=Path("/k")), qemu=fake_qemu)
    m.launch().close()
    m.close()
    assert set(os.listdir("/proc/self/fd")) <= before | {max(before, key=int)}
