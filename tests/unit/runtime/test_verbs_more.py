"""The rest of the runc surface: spec, features, list, events, exec --tty, and kill/delete races
(FAKE local sandbox at the Sandbox boundary; see conftest)."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from subprocess import DEVNULL

from tests.unit.runtime.conftest import Runtime, wait_pid
from tests.unit.runtime.test_lifecycle import _console_listener, _receive_master


def test_spec_writes_a_valid_default_and_never_overwrites(rt: Runtime) -> None:
    b = rt.tmp / "spec"
    b.mkdir()
    assert rt.run("spec", "--bundle", str(b)).returncode == 0
    cfg = json.loads((b / "config.json").read_text())
    assert cfg["ociVersion"] and cfg["root"]["path"] == "rootfs" and cfg["process"]["args"] == ["sh"]
    before = (b / "config.json").read_bytes()
    r = rt.run("spec", "--bundle", str(b))
    assert r.returncode == 1 and b"already exists" in r.stderr
    assert (b / "config.json").read_bytes() == before


def test_features_in_runcs_shape(rt: Runtime) -> None:
    f = json.loads(rt.run("features", check=True).stdout)
    assert f["ociVersionMin"] <= f["ociVersionMax"]
    assert "poststop" in f["hooks"] and "startContainer" not in f["hooks"]
    assert "CAP_SYS_ADMIN" in f["linux"]["capabilities"]
    assert f["annotations"]["io.github.sevbox.isolation"] == "vm"


def test_list_and_events(rt: Runtime) -> None:
    assert rt.run("list", "--quiet", check=True).stdout == b""
    b = rt.bundle("bl", ["sleep", "100"])
    rt.run("create", "--bundle", str(b), "l1", check=True, stdin=DEVNULL, stdout=DEVNULL)
    rt.run("create", "--bundle", str(b), "l2", check=True, stdin=DEVNULL, stdout=DEVNULL)
    rt.run("start", "l2", check=True)
    assert rt.run("list", "-q", check=True).stdout.split() == [b"l1", b"l2"]
    states = {s["id"]: s["status"] for s in json.loads(rt.run("list", "--format", "json", check=True).stdout)}
    assert states == {"l1": "created", "l2": "running"}
    table = rt.run("list", check=True).stdout.decode().splitlines()
    assert table[0].split()[:3] == ["ID", "PID", "STATUS"] and len(table) == 3
    ev = json.loads(rt.run("events", "--stats", "l2", check=True).stdout)
    assert ev["type"] == "stats" and ev["id"] == "l2"
    assert rt.run("events", "--interval", "soon", "l2").returncode == 2
    r = rt.run("update", "--resources", "-", "l2", input=b"{}")
    assert r.returncode == 1 and b"fixed when it boots" in r.stderr


def test_exec_with_a_terminal_over_the_console_socket(rt: Runtime) -> None:
    b = rt.bundle("bt", ["sleep", "100"])
    rt.run("create", "--bundle", str(b), "t1", check=True, stdin=DEVNULL, stdout=DEVNULL)
    rt.run("start", "t1", check=True)
    srv = _console_listener(rt.tmp / "exec-console.sock")
    result: dict[str, object] = {}
    t = threading.Thread(target=lambda: result.update(fd=_receive_master(srv)))
    t.start()
    r = rt.run("exec", "--tty", "--detach", "--console-socket", str(rt.tmp / "exec-console.sock"),
               "--pid-file", str(b / "e.pid"), "t1", "sh", "-c", "echo tty-exec; exit 4")  # fmt: skip
    t.join(30)
    srv.close()
    assert r.returncode == 0, r.stderr
    master = int(result["fd"])  # type: ignore[call-overload]
    status = wait_pid(int((b / "e.pid").read_bytes()))
    seen = b""
    try:
        while chunk := os.read(master, 4096):
            seen += chunk
    except OSError:
        pass
    os.close(master)
    assert os.WEXITSTATUS(status) == 4 and b"tty-exec" in seen


def test_kill_and_delete_force_racing_leave_nothing(rt: Runtime) -> None:
    b = rt.bundle("br", ["sleep", "100"])
    for i in range(5):
        cid = f"race{i}"
        rt.run("create", "--bundle", str(b), "--pid-file", str(b / "p"), cid, check=True, stdin=DEVNULL,
               stdout=DEVNULL)  # fmt: skip
        pid = int((b / "p").read_bytes())
        rt.run("start", cid, check=True)
        codes: dict[str, int] = {}

        def verb(name: str, *args: str, out: dict[str, int] = codes) -> None:
            out[name] = rt.run(*args).returncode

        threads = [
            threading.Thread(target=verb, args=("kill", "kill", cid, "KILL")),
            threading.Thread(target=verb, args=("delete", "delete", "--force", cid)),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert codes["delete"] == 0  # --force always succeeds
        assert codes["kill"] in (0, 1)  # it may find the container already gone: a clean error
        wait_pid(pid, 10)
        assert not (rt.root / cid).exists()
    assert not Path(rt.root).exists() or os.listdir(rt.root) == []


def test_long_state_paths_like_dockers(rt: Runtime) -> None:
    # Docker: --root /var/run/docker/runtime-X/moby and 64-hex ids: longer than sun_path's 107 bytes
    rt.root = rt.tmp / ("r" * 60) / "runtime-sevbox" / "moby"
    cid = "a" * 64
    assert len(str(rt.root / cid / "monitor.sock")) > 108
    b = rt.bundle("blong", ["sh", "-c", "exit 7"])
    rt.run("create", "--bundle", str(b), "--pid-file", str(b / "p"), cid, check=True, stdin=DEVNULL,
           stdout=DEVNULL)  # fmt: skip
    rt.run("start", cid, check=True)
    assert os.WEXITSTATUS(wait_pid(int((b / "p").read_bytes()))) == 7
    rt.run("delete", cid, check=True)
