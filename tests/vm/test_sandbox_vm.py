"""One real guest, many checks: the Sandbox API against a busybox container under TCG.

Boots are costly under emulation (seconds), so one VM runs the container's init process and the
checks run as exec'd processes in it, each asserting what it observes."""

from __future__ import annotations

import hashlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.vm.conftest import wait_no_qemu

from sevbox import protocol as P
from sevbox.runtime.bundle import Process, Rlimit, load_bundle
from sevbox.sandbox import Exited, Output, ProcessStartError, Sandbox, relay

pytestmark = pytest.mark.vm


class Collector:
    """Sorts a sandbox's events by exec id, waits for a process to exit."""

    def __init__(self, sb: Sandbox) -> None:
        self.sb = sb
        self.out: dict[str, dict[str, bytearray]] = {}
        self.status: dict[str, int] = {}

    def pump(self, timeout: float = 0.1) -> None:
        import select

        r, _, _ = select.select([self.sb.fileno()], [], [], timeout)
        if r:
            for ev in self.sb.events():
                if isinstance(ev, Output):
                    self.out.setdefault(ev.exec_id, {"stdout": bytearray(), "stderr": bytearray()})[
                        ev.stream
                    ] += ev.data
                elif isinstance(ev, Exited):
                    self.status[ev.exec_id] = ev.status

    def wait(self, exec_id: str, timeout: float = 60.0) -> tuple[int, bytes, bytes]:
        deadline = time.monotonic() + timeout
        while exec_id not in self.status:
            if time.monotonic() > deadline:
                raise AssertionError(f"{exec_id} did not exit in {timeout}s")
            self.pump()
        o = self.out.get(exec_id, {"stdout": bytearray(), "stderr": bytearray()})
        return self.status[exec_id], bytes(o["stdout"]), bytes(o["stderr"])

    def run(self, exec_id: str, args: list[str], stdin: bytes = b"", **kw: Any) -> tuple[int, bytes, bytes]:
        kw.setdefault("env", ("PATH=/bin",))
        self.sb.exec_process(exec_id, Process(args=tuple(args), **kw))
        if stdin:
            self.sb.write_stdin(exec_id, stdin)
        self.sb.close_stdin(exec_id)
        return self.wait(exec_id)


@pytest.fixture(scope="module")
def booted(
    tmp_path_factory: pytest.TempPathFactory, guest_image: Any
) -> Iterator[tuple[Sandbox, Collector, Path]]:
    import json

    from tests.vm.conftest import make_rootfs, oci_config

    bundle = tmp_path_factory.mktemp("sbvm")
    make_rootfs(bundle / "rootfs")
    (bundle / "rootfs" / "srv").mkdir()
    (bundle / "rootfs" / "srv" / "hello").write_text("bound\n")
    cfg = oci_config(
        ["sh", "-c", "echo started; exec sleep 1000"],
        mounts=[
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts"},
            {"destination": "/mnt", "type": "bind", "source": "rootfs/srv", "options": ["rbind", "ro"]},
        ],
        linux={
            "maskedPaths": ["/proc/kcore"],
            "readonlyPaths": ["/proc/sys"],
            "sysctl": {"kernel.domainname": "sevbox.example"},
        },
    )
    (bundle / "config.json").write_text(json.dumps(cfg))
    b = load_bundle(bundle)
    sb = Sandbox.launch(rootfs=b.rootfs, name="sbvm")
    try:
        sb.create_container(b)
        sb.start_container()
        yield sb, Collector(sb), bundle
    finally:
        sb.close()


def test_boot_facts(booted: tuple[Sandbox, Collector, Path]) -> None:
    sb, col, _ = booted
    assert sb.accel in ("kvm", "tcg")
    for key in ("qemu_start", "kernel_to_init", "agent_ready", "launch_to_ready"):
        assert sb.boot_timings[key] > 0, key
    deadline = time.monotonic() + 30
    while b"started" not in col.out.get("", {}).get("stdout", b""):
        assert time.monotonic() < deadline
        col.pump()


@pytest.mark.parametrize("code", [0, 1, 3, 255])
def test_exit_codes(booted: tuple[Sandbox, Collector, Path], code: int) -> None:
    _, col, _ = booted
    assert col.run(f"exit{code}", ["sh", "-c", f"echo out{code}; echo err{code} >&2; exit {code}"]) == (
        code,
        f"out{code}\n".encode(),
        f"err{code}\n".encode(),
    )


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGKILL, 137), (signal.SIGTERM, 143)])
def test_killed_by_signal(booted: tuple[Sandbox, Collector, Path], sig: int, status: int) -> None:
    sb, col, _ = booted
    eid = f"sig{sig}"
    sb.exec_process(eid, Process(args=("sleep", "100"), env=("PATH=/bin",)))
    sb.signal(eid, sig)
    assert col.wait(eid)[0] == status


def test_binary_stdin_echoed_back_intact(booted: tuple[Sandbox, Collector, Path]) -> None:
    _, col, _ = booted
    blob = os.urandom(3 << 20) + bytes(range(256))
    status, out, err = col.run("cat", ["cat"], stdin=blob)
    assert status == 0 and err == b""
    assert len(out) == len(blob)
    assert hashlib.sha256(out).digest() == hashlib.sha256(blob).digest()


def test_env_cwd_user(booted: tuple[Sandbox, Collector, Path]) -> None:
    _, col, _ = booted
    status, out, _ = col.run(
        "who",
        ["sh", "-c", 'id -u; id -g; id -G; pwd; echo "$FOO"'],
        env=("PATH=/bin", "FOO=bar baz"),
        cwd="/tmp",
        uid=1000,
        gid=1001,
        additional_gids=(5, 6),
    )
    assert status == 0
    assert out.decode().split("\n") == ["1000", "1001", "1001 5 6", "/tmp", "bar baz", ""]


def test_hostname_sysctl_masked_and_readonly_paths(booted: tuple[Sandbox, Collector, Path]) -> None:
    _, col, _ = booted
    script = (
        "hostname; cat /proc/sys/kernel/domainname; wc -c < /proc/kcore;"
        " (echo x > /proc/sys/kernel/domainname) 2>/dev/null && echo sys-writable || echo sys-readonly;"
        " cat /mnt/hello; (touch /mnt/new) 2>/dev/null && echo bind-writable || echo bind-readonly;"
        " echo x > /dev/null && echo devnull-ok"
    )
    status, out, _ = col.run("paths", ["sh", "-c", script])
    assert status == 0
    assert out.decode().split("\n") == [
        "sevbox-test",
        "sevbox.example",
        "0",
        "sys-readonly",
        "bound",
        "bind-readonly",
        "devnull-ok",
        "",
    ]


def test_rlimits_no_new_privs_capabilities(booted: tuple[Sandbox, Collector, Path]) -> None:
    _, col, _ = booted
    status, out, _ = col.run(
        "limits",
        ["sh", "-c", "ulimit -n; grep -E '^(NoNewPrivs|CapEff|CapBnd)' /proc/self/status"],
        rlimits=(Rlimit("RLIMIT_NOFILE", 77, 77),),
        no_new_privileges=True,
        capabilities={"bounding": ("CAP_KILL",), "effective": ("CAP_KILL",), "permitted": ("CAP_KILL",)},
    )
    assert status == 0
    lines = out.decode().split("\n")
    assert lines[0] == "77"
    fields = dict(line.split(":\t") for line in lines[1:] if line)
    assert fields == {"NoNewPrivs": "1", "CapEff": "0000000000000020", "CapBnd": "0000000000000020"}


def test_file_written_in_container_is_in_the_bundle(booted: tuple[Sandbox, Collector, Path]) -> None:
    _, col, bundle = booted
    token = os.urandom(8).hex()
    assert col.run("write", ["sh", "-c", f"echo {token} > /data/out.txt"])[0] == 0
    assert (bundle / "rootfs" / "data" / "out.txt").read_text() == f"{token}\n"


def test_missing_executable(booted: tuple[Sandbox, Collector, Path]) -> None:
    sb, col, _ = booted
    with pytest.raises(ProcessStartError, match="not found") as info:
        sb.exec_process("missing", Process(args=("no-such-program",), env=("PATH=/bin",)))
    assert info.value.status == 127
    assert col.wait("missing")[0] == 127


def test_terminal_size_and_resize(booted: tuple[Sandbox, Collector, Path]) -> None:
    sb, col, _ = booted
    sb.exec_process(
        "tty1",
        Process(
            args=("sh", "-c", "stty size; read x; stty size; test -t 0 && echo isatty"),
            env=("PATH=/bin",),
            terminal=True,
            console_size=(10, 33),
        ),
    )
    deadline = time.monotonic() + 30
    while b"10 33" not in col.out.get("tty1", {}).get("stdout", b""):
        assert time.monotonic() < deadline
        col.pump()
    sb.resize("tty1", 40, 100)
    sb.write_stdin("tty1", b"go\n")
    status, out, _ = col.wait("tty1")
    assert status == 0
    text = out.decode().replace("\r", "")
    assert text.startswith("10 33") and "go\n" in text  # the terminal echoes what is typed
    assert "\n40 100\n" in text and "isatty" in text


def test_relay_keeps_other_processes_events(booted: tuple[Sandbox, Collector, Path]) -> None:
    sb, col, _ = booted
    env = ("PATH=/bin",)
    sb.exec_process("bg", Process(args=("sh", "-c", "echo bg-out; sleep 0.3; echo bg-done"), env=env))
    sb.exec_process("fg", Process(args=("sh", "-c", "sleep 1; cat; echo fg-done >&2"), env=env))
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    os.write(in_w, b"typed\n")
    os.close(in_w)
    try:
        status = relay(sb, "fg", in_r, out_w, err_w, forward_signals=False)
    finally:
        for fd in (in_r, out_w, err_w):
            os.close(fd)
    with os.fdopen(out_r, "rb") as o, os.fdopen(err_r, "rb") as e:
        assert (status, o.read(), e.read()) == (0, b"typed\n", b"fg-done\n")
    assert col.wait("bg") == (0, b"bg-out\nbg-done\n", b"")  # seen by relay, handed back


def test_orphans_are_reaped(booted: tuple[Sandbox, Collector, Path]) -> None:
    _, col, _ = booted
    # The inner sh exits at once; its sleep becomes an orphan of PID 1 (the agent), which must reap it.
    status, out, _ = col.run(
        "orphans", ["sh", "-c", "sh -c 'sleep 0.2 &'; sleep 1.5; cat /proc/[0-9]*/stat 2>/dev/null"]
    )
    assert status == 0
    states = [line.rpartition(")")[2].split()[0] for line in out.decode().splitlines() if ")" in line]
    assert states and "Z" not in states


def test_ps_lists_container_processes(booted: tuple[Sandbox, Collector, Path]) -> None:
    sb, _, _ = booted
    pids = sb.ps()
    assert pids and 1 not in pids


def test_agent_survives_garbage(booted: tuple[Sandbox, Collector, Path]) -> None:
    sb, col, _ = booted
    before = len(sb.rejected)
    sb.send_raw(os.urandom(3000).replace(P.MAGIC, b"xx"))
    sb.send_raw(P.frame(P.Kind.REQUEST, 0xFFFF0001, b'{"type":"Reboot"}'))
    sb.send_raw(P.frame(P.Kind.REQUEST, 0xFFFF0002, b"\xff not json"))
    sb.send_raw(P.HEADER.pack(P.MAGIC, P.VERSION, 1, 5, P.MAX_PAYLOAD + 1))
    sb.send_raw(P.frame(P.Kind.STDOUT, 0, b"\x03abc"))  # a kind the host must not send
    sb.ping()
    assert col.run("after", ["echo", "still serving"])[:2] == (0, b"still serving\n")
    assert len(sb.rejected) > before


def test_pause_and_resume(booted: tuple[Sandbox, Collector, Path]) -> None:
    sb, _, _ = booted
    sb.pause()
    try:
        assert sb.machine.command("query-status")["status"] == "paused"
    finally:
        sb.resume()
    assert sb.machine.command("query-status")["status"] == "running"
    sb.ping()


def test_zz_shutdown_leaves_nothing(booted: tuple[Sandbox, Collector, Path]) -> None:
    sb, _, bundle = booted
    pid = sb.qemu_pid
    sb.shutdown()
    assert not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    assert wait_no_qemu(bundle) == []
    with pytest.raises(Exception, match="gone|not running"):
        sb.ping()
