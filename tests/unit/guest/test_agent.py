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


def test_find_program_is_runc_create_check(tmp_path: Path) -> None:
    """The create-time lookup: found (None), missing (127) and not executable (126), as exec would say."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "tool").mkdir()  # a directory named like the program: skipped, not a hit
    prog = tmp_path / "b" / "tool"
    prog.write_text("#!/bin/sh\n")
    prog.chmod(0o755)
    plain = tmp_path / "b" / "data"
    plain.write_text("x")
    plain.chmod(0o644)
    path = f"{tmp_path / 'a'}:{tmp_path / 'b'}"
    assert agent.find_program("tool", path) is None
    assert agent.find_program(str(prog), "") is None
    assert agent.find_program("nope", path) == (127, "exec: 'nope': executable file not found in $PATH")
    missing = str(tmp_path / "nope")
    assert agent.find_program(missing, path) == (127, f"exec {missing!r}: No such file or directory")
    assert agent.find_program(str(plain), path) == (126, f"exec {str(plain)!r}: Permission denied")
    assert agent.find_program("data", path) == (126, "exec 'data': Permission denied")
    assert agent.find_program(str(tmp_path / "a"), path) == (
        126,
        f"exec {str(tmp_path / 'a')!r}: Is a directory",
    )
    assert agent.find_program("tool", str(tmp_path / "a")) == (126, "exec 'tool': Permission denied")


def test_check_program_looks_inside_the_container_root(tmp_path: Path) -> None:
    """Absolute symlinks resolve in the container (a chrooted child), relative paths from its cwd."""
    from sevbox import protocol as P

    root = tmp_path / "root"
    (root / "bin").mkdir(parents=True)
    (root / "work").mkdir()
    (root / "bin" / "busybox").write_text("")
    (root / "bin" / "busybox").chmod(0o755)
    os.symlink("/bin/busybox", root / "bin" / "sh")  # absolute: only right inside the root
    os.symlink("/bin/absent", root / "bin" / "dangling")
    (root / "work" / "run.sh").write_text("")
    (root / "work" / "run.sh").chmod(0o755)

    def spec(*args: str, cwd: str = "/") -> P.ProcessSpec:
        return P.ProcessSpec(args=args, env=("PATH=/bin",), cwd=cwd)

    assert agent.check_program(spec("sh", "-c", "true"), str(root)) is None
    assert agent.check_program(spec("./run.sh", cwd="/work"), str(root)) is None
    assert agent.check_program(spec("./run.sh"), str(root)) == (
        127,
        "exec './run.sh': No such file or directory",
    )
    assert agent.check_program(spec("/bin/dangling"), str(root)) == (
        127,
        "exec '/bin/dangling': No such file or directory",
    )
    assert agent.check_program(spec("cat"), str(root)) == (
        127,
        "exec: 'cat': executable file not found in $PATH",
    )
