"""Pure helpers of the guest agent, run on the host (the agent itself is exercised in tests/vm)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sevbox.guest.agent import main as agent


def test_mount_options_split_flags_from_data() -> None:
    flags, data = agent._mount_options(("nosuid", "ro", "mode=755", "size=65536k", "rbind", "rprivate"))
    assert flags == agent.MS_NOSUID | agent.MS_RDONLY | agent.MS_BIND | agent.MS_REC
    assert data == "mode=755,size=65536k"


@pytest.mark.parametrize(("path", "inside"), [("/proc", "/r/proc"), ("a/./b//c", "/r/a/b/c"), ("/", "/r/")])
def test_inside_keeps_paths_in_the_container(path: str, inside: str) -> None:
    assert agent._inside("/r", path) == inside


def test_inside_refuses_dotdot() -> None:
    with pytest.raises(OSError, match="leaves the container"):
        agent._inside("/r", "/proc/../../etc")


def test_exec_searches_path_and_reports_not_found(tmp_path: Path) -> None:
    """_exec in a forked child: PATH order honoured; a missing program is FileNotFoundError."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    prog = tmp_path / "b" / "hello"
    prog.write_text("#!/bin/sh\necho from-b\n")
    prog.chmod(0o755)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (child)
        os.dup2(w, 1)
        try:
            agent._exec(["hello"], {"PATH": f"{tmp_path / 'a'}:{tmp_path / 'b'}"})
        finally:
            os._exit(99)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        assert f.read() == b"from-b\n"
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    with pytest.raises(FileNotFoundError):
        agent._exec(["no-such-program-xyz"], {"PATH": str(tmp_path / "a")})
