"""The runc verbs driven as containerd drives them (FAKE local sandbox; real VMs in tests/vm)."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import struct
import termios
import time
from pathlib import Path
from subprocess import DEVNULL

import pytest
from tests.unit.runtime.conftest import Runtime, wait_pid


def read_pid(path: Path) -> int:
    raw = path.read_bytes()
    assert raw.isdigit(), raw  # digits only, no trailing newline (containerd requires it)
    return int(raw)


def test_create_start_exit_delete(rt: Runtime) -> None:
    b = rt.bundle("b1", ["sh", "-c", "echo out; echo err >&2; exit 3"])
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    r = rt.run("create", "--bundle", str(b), "--pid-file", str(b / "init.pid"), "c1",
               stdin=DEVNULL, stdout=out_w, stderr=err_w)  # fmt: skip
    os.close(out_w)
    os.close(err_w)
    assert r.returncode == 0
    pid = read_pid(b / "init.pid")
    st = rt.state("c1")
    assert (st["status"], st["pid"], st["id"], st["bundle"]) == ("created", pid, "c1", str(b))
    assert st["ociVersion"] and st["created"].endswith("Z")
    rt.run("start", "c1", check=True)
    status = wait_pid(pid)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 3
    assert os.read(out_r, 100) == b"out\n"
    assert os.read(err_r, 100) == b"err\n"
    assert rt.state("c1")["status"] == "stopped"
    rt.run("delete", "c1", check=True)
    r = rt.run("state", "c1")
    assert r.returncode == 1 and b"container c1 does not exist" in r.stderr


def test_kill_reaches_process_and_pid_dies_by_signal(rt: Runtime) -> None:
    b = rt.bundle("b2", ["sleep", "100"])
    rt.run("create", "--bundle", str(b), "--pid-file", str(b / "p"), "c2", check=True,
           stdin=DEVNULL, stdout=DEVNULL)  # fmt: skip
    pid = read_pid(b / "p")
    rt.run("start", "c2", check=True)
    assert rt.state("c2")["status"] == "running"
    rt.run("kill", "c2", "15", check=True)
    status = wait_pid(pid)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM
    r = rt.run("kill", "c2", "KILL")
    assert r.returncode == 1 and b"container not running" in r.stderr


def test_state_errors_and_delete_rules(rt: Runtime) -> None:
    b = rt.bundle("b3", ["sleep", "100"])
    rt.run("create", "--bundle", str(b), "c3", check=True, stdin=DEVNULL, stdout=DEVNULL)  # fmt: skip
    r = rt.run("create", "--bundle", str(b), "c3")
    assert r.returncode == 1 and b"already exists" in r.stderr
    r = rt.run("delete", "c3")
    assert r.returncode == 1 and b"not stopped: created" in r.stderr
    rt.run("start", "c3", check=True)
    r = rt.run("start", "c3")
    assert r.returncode == 1 and b"running" in r.stderr
    r = rt.run("delete", "c3")
    assert r.returncode == 1 and b"not stopped: running" in r.stderr
    pid = rt.state("c3")["pid"]
    rt.run("delete", "--force", "c3", check=True)
    wait_pid(pid, 5)
    assert not (rt.root / "c3").exists()
    assert rt.run("delete", "--force", "c3").returncode == 0  # gone already: still fine


@pytest.mark.parametrize("bad", ["../x", "a/b", "", "x" * 300])
def test_bad_ids(rt: Runtime, bad: str) -> None:
    r = rt.run("create", "--bundle", str(rt.tmp), bad)
    assert r.returncode == 1 and b"invalid container id" in r.stderr and b"Traceback" not in r.stderr


def test_exec_detached_and_attached(rt: Runtime) -> None:
    b = rt.bundle("b4", ["sleep", "100"])
    rt.run("create", "--bundle", str(b), "c4", check=True, stdin=DEVNULL, stdout=DEVNULL)  # fmt: skip
    rt.run("start", "c4", check=True)
    r = rt.run("exec", "c4", "sh", "-c", "echo hello; exit 5")
    assert r.returncode == 5 and r.stdout == b"hello\n"
    proc = {"args": ["sh", "-c", "read x; echo got $x; exit 7"], "cwd": "/", "env": ["PATH=/bin:/usr/bin"]}
    (b / "proc.json").write_text(json.dumps(proc))
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    r = rt.run("exec", "--process", str(b / "proc.json"), "--detach", "--pid-file", str(b / "e.pid"), "c4",
               stdin=in_r, stdout=out_w, stderr=out_w)  # fmt: skip
    os.close(in_r)
    os.close(out_w)
    assert r.returncode == 0, r
    epid = read_pid(b / "e.pid")
    os.write(in_w, b"abc\n")
    os.close(in_w)
    status = wait_pid(epid)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 7
    assert os.read(out_r, 100) == b"got abc\n"
    r = rt.run("ps", "--format", "json", "c4", check=True)
    assert isinstance(json.loads(r.stdout), list)


def test_json_log_on_error(rt: Runtime) -> None:
    log = rt.tmp / "log.json"
    r = rt.run("--log", str(log), "--log-format", "json", "kill", "nope", "9")
    assert r.returncode == 1
    line = json.loads(log.read_text().strip().splitlines()[-1])
    assert line["level"] == "error" and "does not exist" in line["msg"] and line["time"].endswith("Z")


def test_cycles_leave_nothing_behind(rt: Runtime) -> None:
    b = rt.bundle("b5", ["true"])
    before = set(os.listdir("/proc/self/fd"))
    for i in range(20):
        cid = f"cyc{i}"
        rt.run("create", "--bundle", str(b), "--pid-file", str(b / "p"), cid, check=True,
               stdin=DEVNULL, stdout=DEVNULL)  # fmt: skip
        pid = read_pid(b / "p")
        rt.run("start", cid, check=True)
        assert os.WEXITSTATUS(wait_pid(pid)) == 0
        rt.run("delete", cid, check=True)
    assert os.listdir(rt.root) == []
    assert set(os.listdir("/proc/self/fd")) == before


def test_verify_memory_reports_plaintext_canary(rt: Runtime) -> None:
    # the FAKE keeps its canary in plaintext host memory, exactly as a TCG guest without SEV does
    b = rt.bundle("b6", ["sleep", "100"])
    rt.run("create", "--bundle", str(b), "c6", check=True, stdin=DEVNULL, stdout=DEVNULL)
    rt.run("start", "c6", check=True)
    r = rt.run("verify-memory", "--json", "--marker", "owner-marker-0123456789", "c6")
    assert r.returncode == 1, r.stderr
    result = json.loads(r.stdout)
    assert result["encrypted"] is False and result["canary_found"] and result["marker_found"]
    r = rt.run("verify-memory", "c6")
    assert r.returncode == 1 and b"guest memory is NOT encrypted" in r.stdout


def _console_listener(path: Path) -> socket.socket:
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(1)
    srv.settimeout(30)
    return srv


def _receive_master(srv: socket.socket) -> int:
    conn, _ = srv.accept()
    with conn:
        _msg, fds, _flags, _addr = socket.recv_fds(conn, 1024, 1)
    assert len(fds) == 1
    return fds[0]


def test_terminal_over_console_socket_with_resize(rt: Runtime) -> None:
    b = rt.bundle("b7", ["sh", "-c", "echo tty-ok; sleep 2; echo bye"], terminal=True)
    srv = _console_listener(rt.tmp / "console.sock")
    r = rt.run("create", "--bundle", str(b), "--console-socket", str(rt.tmp / "console.sock"),
               "--pid-file", str(b / "p"), "c7")  # fmt: skip
    assert r.returncode == 0, r.stderr
    master = _receive_master(srv)
    srv.close()
    pid = read_pid(b / "p")
    rt.run("start", "c7", check=True)
    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 99, 0, 0))
    seen = b""
    deadline = time.monotonic() + 20
    while b"bye" not in seen and time.monotonic() < deadline:
        try:
            seen += os.read(master, 4096)
        except OSError:
            break
    os.close(master)
    assert b"tty-ok" in seen and b"[resize 33x99]" in seen, seen
    assert os.WEXITSTATUS(wait_pid(pid)) == 0


def test_hooks_run_with_state_and_failing_hook_fails_create(rt: Runtime) -> None:
    out = rt.tmp / "hook.out"
    b = rt.bundle("b8", ["true"])
    config = json.loads((b / "config.json").read_text())
    config["hooks"] = {
        "createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c", f"cat > {out}"]}],
        "poststop": [{"path": "/bin/sh", "args": ["sh", "-c", f"echo stopped >> {out}.stop"]}],
    }
    (b / "config.json").write_text(json.dumps(config))
    rt.run("create", "--bundle", str(b), "--pid-file", str(b / "p"), "c8", check=True,
           stdin=DEVNULL, stdout=DEVNULL)  # fmt: skip
    state = json.loads(out.read_text())
    assert state["id"] == "c8" and state["status"] == "created" and state["pid"] == read_pid(b / "p")
    rt.run("start", "c8", check=True)
    wait_pid(read_pid(b / "p"))
    rt.run("delete", "c8", check=True)
    assert Path(f"{out}.stop").read_text() == "stopped\n"
    config["hooks"] = {"createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c", "echo nope >&2; exit 4"]}]}
    (b / "config.json").write_text(json.dumps(config))
    r = rt.run("create", "--bundle", str(b), "c9", stdin=DEVNULL)
    assert r.returncode == 1 and b"createRuntime hook /bin/sh failed with exit status 4: nope" in r.stderr
    assert not (rt.root / "c9").exists()


def test_start_of_a_missing_executable_stops_with_127(rt: Runtime) -> None:
    b = rt.bundle("bm", ["/no/such/program"])
    err_r, err_w = os.pipe()
    rt.run("create", "--bundle", str(b), "--pid-file", str(b / "p"), "m1", check=True, stdin=DEVNULL,
           stdout=DEVNULL, stderr=err_w)  # fmt: skip
    os.close(err_w)
    r = rt.run("start", "m1")
    assert r.returncode == 1 and b"/no/such/program" in r.stderr
    status = wait_pid(read_pid(b / "p"))
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 127
    assert b"/no/such/program" in os.read(err_r, 1000)
    os.close(err_r)
    assert rt.state("m1")["status"] == "stopped"


def test_pre_launch_attestation_launches_paused_and_start_lets_it_run(rt: Runtime) -> None:
    b = rt.bundle("bp", ["sh", "-c", "echo ran"])
    cfg = json.loads((b / "config.json").read_text())
    cfg["annotations"] = {"sevbox.attestation": "pre-launch"}
    (b / "config.json").write_text(json.dumps(cfg))
    out_r, out_w = os.pipe()
    rt.run("create", "--bundle", str(b), "--pid-file", str(b / "p"), "pl1", check=True, stdin=DEVNULL,
           stdout=out_w)  # fmt: skip
    os.close(out_w)
    st = rt.state("pl1")
    assert st["status"] == "created" and st["annotations"]["sevbox.fake.launched-paused"] == "true"
    rt.run("start", "pl1", check=True)
    assert os.WEXITSTATUS(wait_pid(read_pid(b / "p"))) == 0
    assert os.read(out_r, 100) == b"ran\n"
    os.close(out_r)
    r = rt.run("run", "--detach", "--bundle", str(b), "pl2")
    assert r.returncode == 1 and b"pre-launch" in r.stderr
    cfg["annotations"] = {"sevbox.attestation": "later"}
    (b / "config.json").write_text(json.dumps(cfg))
    r = rt.run("create", "--bundle", str(b), "pl3")
    assert r.returncode == 1 and b"the only value is 'pre-launch'" in r.stderr
