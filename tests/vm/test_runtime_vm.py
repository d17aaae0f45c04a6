"""The runc verbs on real guests (TCG): one container's whole life, driven as containerd drives it,
with the checks that need a real VM batched into it (boots are expensive here)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests.unit.runtime.conftest import become_subreaper, wait_pid
from tests.vm.conftest import wait_no_qemu

pytestmark = pytest.mark.vm


def sevbox(root: Path, *args: str, **kw: Any) -> subprocess.CompletedProcess[bytes]:
    kw.setdefault("capture_output", "stdout" not in kw)
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        [sys.executable, "-m", "sevbox", "--root", str(root), *args], timeout=180, check=False, **kw
    )


def test_container_life_in_a_real_vm(make_bundle: Callable[..., Path], tmp_path: Path) -> None:
    become_subreaper()
    root = tmp_path / "state"
    bundle = make_bundle(["sh", "-c", 'echo started; read line; echo "got $line"; sleep 1000'])
    stdin_r, stdin_w = os.pipe()
    out_r, out_w = os.pipe()
    r = sevbox(root, "create", "--bundle", str(bundle), "--pid-file", str(bundle / "init.pid"), "vm1",
               stdin=stdin_r, stdout=out_w, stderr=out_w)  # fmt: skip
    os.close(stdin_r)
    os.close(out_w)
    assert r.returncode == 0, r.stderr
    pid = int((bundle / "init.pid").read_bytes())
    state = json.loads(sevbox(root, "state", "vm1").stdout)
    assert state["status"] == "created" and state["pid"] == pid
    ann = state["annotations"]
    assert ann["sevbox.launch-security.effective"] == "none"  # this host has no SEV, and says so
    assert "NOT encrypted" in ann["sevbox.launch-security.reason"]
    assert ann["sevbox.guest.memory-encryption"] == "none reported"
    assert ann["sevbox.guest.sev-status"] == "SEV_STATUS=0x0: not encrypted (the SEV bit is clear)"

    assert sevbox(root, "start", "vm1").returncode == 0
    with os.fdopen(out_r, "rb", buffering=0) as out:
        assert out.readline() == b"started\n"
        os.write(stdin_w, b"hello\n")
        assert out.readline() == b"got hello\n"

        # exec, attached: output and exit status come back
        r = sevbox(root, "exec", "vm1", "sh", "-c", "echo in-exec; exit 6")
        assert (r.returncode, r.stdout) == (6, b"in-exec\n")
        # exec, detached with a pid file: its proxy exits with the process's status
        r = sevbox(root, "exec", "--detach", "--pid-file", str(bundle / "e.pid"), "vm1", "sh", "-c", "exit 9",
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)  # fmt: skip
        assert r.returncode == 0, r.stderr
        status = wait_pid(int((bundle / "e.pid").read_bytes()), 60)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 9
        pids = json.loads(sevbox(root, "ps", "--format", "json", "vm1").stdout)
        assert isinstance(pids, list) and pids

        # the demonstration AMD made by hand, as a check: the canary is readable in QEMU's memory
        r = sevbox(root, "verify-memory", "--json", "vm1")
        result = json.loads(r.stdout)
        assert r.returncode == 1 and result["encrypted"] is False and result["canary_found"], result
        assert result["launch_security"] == "none" and result["scanned_mib"] >= 256

        assert sevbox(root, "pause", "vm1").returncode == 0
        assert json.loads(sevbox(root, "state", "vm1").stdout)["status"] == "paused"
        assert sevbox(root, "resume", "vm1").returncode == 0
        assert json.loads(sevbox(root, "state", "vm1").stdout)["status"] == "running"

        r = sevbox(root, "delete", "vm1")
        assert r.returncode == 1 and b"not stopped: running" in r.stderr
        assert sevbox(root, "kill", "vm1", "TERM").returncode == 0
        status = wait_pid(pid)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM
    os.close(stdin_w)
    assert json.loads(sevbox(root, "state", "vm1").stdout)["status"] == "stopped"
    assert sevbox(root, "delete", "vm1").returncode == 0
    assert wait_no_qemu(bundle) == []
    assert not (root / "vm1").exists()


def test_delete_force_of_a_running_vm(make_bundle: Callable[..., Path], tmp_path: Path) -> None:
    become_subreaper()
    root = tmp_path / "state"
    bundle = make_bundle(["sleep", "1000"])
    r = sevbox(root, "run", "--detach", "--bundle", str(bundle), "--pid-file", str(bundle / "p"), "vm2",
               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)  # fmt: skip
    assert r.returncode == 0, r.stderr
    pid = int((bundle / "p").read_bytes())
    assert json.loads(sevbox(root, "state", "vm2").stdout)["status"] == "running"
    t0 = time.monotonic()
    assert sevbox(root, "delete", "--force", "vm2").returncode == 0
    assert time.monotonic() - t0 < 5.0  # containerd kills `delete --force` after 5 s
    wait_pid(pid, 10)
    assert wait_no_qemu(bundle) == []
    assert not (root / "vm2").exists()


def test_pre_launch_attestation_flow_on_a_real_vm(make_bundle: Callable[..., Path], tmp_path: Path) -> None:
    from sevbox.runtime.container import Container
    from sevbox.runtime.store import Store

    become_subreaper()
    root = tmp_path / "state"
    bundle = make_bundle(["sh", "-c", "echo after-attestation"])
    cfg = json.loads((bundle / "config.json").read_text())
    cfg["annotations"] = {"sevbox.attestation": "pre-launch"}
    (bundle / "config.json").write_text(json.dumps(cfg))
    out_r, out_w = os.pipe()
    r = sevbox(root, "create", "--bundle", str(bundle), "--pid-file", str(bundle / "p"), "pl",
               stdin=subprocess.DEVNULL, stdout=out_w)  # fmt: skip
    os.close(out_w)
    assert r.returncode == 0, r.stderr
    c = Container.load(Store(root), "pl")
    # QEMU holds the guest before its first instruction: the owner measures and injects now
    status = c.ask({"op": "qmp", "command": "query-status"})["return"]
    assert status["status"] == "prelaunch" and status["running"] is False
    assert "pre-launch" in json.loads(sevbox(root, "state", "pl").stdout)["annotations"]["sevbox.attestation"]
    hdr, payload = tmp_path / "h.bin", tmp_path / "p.bin"
    hdr.write_bytes(b"\0" * 52)
    payload.write_bytes(b"\0" * 32)
    r = sevbox(root, "attest", "inject", "pl", "--header", str(hdr), "--payload", str(payload))
    assert r.returncode == 1 and len(r.stderr.splitlines()) == 1 and b"without SEV" in r.stderr, r.stderr
    assert sevbox(root, "start", "pl").returncode == 0  # the host may go on without a secret
    with os.fdopen(out_r, "rb") as out:
        assert out.read() == b"after-attestation\n"
    assert os.WEXITSTATUS(wait_pid(int((bundle / "p").read_bytes()))) == 0
    assert sevbox(root, "delete", "pl").returncode == 0
    assert wait_no_qemu(bundle) == []


def test_init_exit_ends_its_background_children(make_bundle: Callable[..., Path], tmp_path: Path) -> None:
    # `docker run img sh -c 'sleep 1000 & echo hi'` must end when sh does, as with a PID namespace
    bundle = make_bundle(["sh", "-c", "sleep 1000 & echo hi; exit 2"])
    t0 = time.monotonic()
    r = sevbox(tmp_path / "state", "run", "--bundle", str(bundle), "bg", stdin=subprocess.DEVNULL)
    assert (r.returncode, r.stdout) == (2, b"hi\n"), r.stderr
    assert time.monotonic() - t0 < 60


def test_host_file_binds_from_outside_the_rootfs(make_bundle: Callable[..., Path], tmp_path: Path) -> None:
    # what Docker does with /etc/resolv.conf, /etc/hostname and /etc/hosts
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 10.9.8.7\n")
    mounts = [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/etc/resolv.conf", "type": "bind", "source": str(resolv),
         "options": ["rbind", "ro"]},
    ]
    bundle = make_bundle(["sh", "-c", "cat /etc/resolv.conf; echo x > /etc/resolv.conf || echo read-only"],
                         mounts=mounts)  # fmt: skip
    r = sevbox(tmp_path / "state", "run", "--bundle", str(bundle), "fb", stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"nameserver 10.9.8.7\nread-only\n"
    assert resolv.read_text() == "nameserver 10.9.8.7\n"  # the host's file is untouched


def test_host_directory_volumes(make_bundle: Callable[..., Path], tmp_path: Path) -> None:
    # docker run -v /host/dir:/data: a directory outside the rootfs gets its own virtio-9p share
    rw, ro = tmp_path / "rw", tmp_path / "ro"
    rw.mkdir()
    ro.mkdir()
    (ro / "given.txt").write_text("from the host\n")
    mounts = [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/data", "type": "bind", "source": str(rw), "options": ["rbind", "rw"]},
        {"destination": "/in", "type": "bind", "source": str(ro), "options": ["rbind", "ro"]},
    ]
    script = "cat /in/given.txt; echo written > /data/out.txt; touch /in/nope 2>/dev/null || echo ro-ok"
    bundle = make_bundle(["sh", "-c", script], mounts=mounts)
    r = sevbox(tmp_path / "state", "run", "--bundle", str(bundle), "vol", stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"from the host\nro-ok\n"
    assert (rw / "out.txt").read_text() == "written\n" and not (ro / "nope").exists()
