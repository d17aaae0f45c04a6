"""Docker drives sevbox unchanged: `runtimes` in daemon.json, `docker run --runtime sevbox`.

A private dockerd (its own data/exec roots and socket) over a private containerd (see
test_containerd.py); the image is imported from a busybox-static rootfs tarball (no registry).
Marked vm: every container boots a real guest under TCG.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.peers.test_containerd import SEVBOX, Containerd, pids_mentioning, private_containerd

pytestmark = [pytest.mark.peers, pytest.mark.vm]

IMAGE = "sevbox-test/busybox:latest"


class Docker:
    def __init__(self, top: Path, sock: Path) -> None:
        self.top, self.sock = top, sock

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "DOCKER_HOST": f"unix://{self.sock}"}
        return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False,
                              env=env, stdin=subprocess.DEVNULL)  # fmt: skip


def _rootfs_tar(path: Path) -> None:
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("bin")
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(info)
        tar.add("/bin/busybox", "bin/busybox")
        for applet in ("sh", "echo", "cat", "sleep", "hostname"):
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)


@contextlib.contextmanager
def private_docker(c: Containerd) -> Iterator[Docker]:
    top = c.top / "docker"
    top.mkdir()
    sock = top / "d.sock"
    config = {
        "runtimes": {"sevbox": {"path": str(SEVBOX)}},
        "data-root": str(top / "data"), "exec-root": str(top / "exec"), "pidfile": str(top / "d.pid"),
        "hosts": [f"unix://{sock}"], "bridge": "none", "iptables": False, "ip6tables": False,
    }  # fmt: skip
    (top / "daemon.json").write_text(json.dumps(config))
    log = (top / "dockerd.log").open("wb")
    proc = subprocess.Popen(
        ["dockerd", "--config-file", str(top / "daemon.json"), "--containerd", str(c.sock)],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
    )  # fmt: skip
    d = Docker(top, sock)
    try:
        deadline = time.monotonic() + 30
        while d.run("info", timeout=10).returncode != 0:
            assert proc.poll() is None, (top / "dockerd.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "dockerd did not serve"
            time.sleep(0.2)
        _rootfs_tar(top / "rootfs.tar")
        r = d.run("import", str(top / "rootfs.tar"), IMAGE)
        assert r.returncode == 0, r.stderr
        yield d
    finally:
        with contextlib.suppress(Exception):
            for cid in d.run("ps", "-aq").stdout.split():
                d.run("rm", "-f", cid)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        for mnt in ("data", "exec"):
            subprocess.run(["umount", "-R", "-l", str(top / mnt)], capture_output=True, check=False)
        shutil.rmtree(top, ignore_errors=True)


@pytest.fixture(scope="module")
def docker() -> Iterator[Docker]:
    if shutil.which("dockerd") is None:
        pytest.fail("dockerd is missing: scripts/setup installs docker.io")
    with private_containerd() as c, private_docker(c) as d:
        yield d


def test_docker_run_with_the_sevbox_runtime(docker: Docker) -> None:
    r = docker.run("run", "--rm", "--runtime", "sevbox", "--network", "none", IMAGE,
                   "sh", "-c", "echo hello from a VM; cat /etc/hostname; exit 3")  # fmt: skip
    assert r.returncode == 3, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "hello from a VM" and len(lines[1]) == 12  # Docker's hostname: the short id


def test_docker_detached_exec_pause_stop_rm(docker: Docker) -> None:
    r = docker.run("run", "-d", "--name", "d1", "--runtime", "sevbox", "--network", "none", IMAGE,
                   "sleep", "1000")  # fmt: skip
    assert r.returncode == 0, r.stderr
    r = docker.run("exec", "d1", "sh", "-c", "echo in-exec; exit 5")
    assert (r.returncode, r.stdout) == (5, "in-exec\n"), r.stderr
    assert docker.run("pause", "d1").returncode == 0
    assert docker.run("inspect", "-f", "{{.State.Status}}", "d1").stdout.strip() == "paused"
    assert docker.run("unpause", "d1").returncode == 0
    assert docker.run("stop", "-t", "5", "d1").returncode == 0
    assert docker.run("inspect", "-f", "{{.State.ExitCode}}", "d1").stdout.strip() == "143"
    assert docker.run("rm", "d1").returncode == 0
    deadline = time.monotonic() + 10
    while pids_mentioning("qemu-system", also=str(docker.top.parent)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pids_mentioning("qemu-system", also=str(docker.top.parent)) == []


def test_docker_volume_is_shared_with_the_vm(docker: Docker) -> None:
    vol = docker.top / "vol"
    vol.mkdir()
    r = docker.run("run", "--rm", "--runtime", "sevbox", "--network", "none", "-v", f"{vol}:/data", IMAGE,
                   "sh", "-c", "echo from-the-vm > /data/f; cat /data/f")  # fmt: skip
    assert (r.returncode, r.stdout) == (0, "from-the-vm\n"), r.stderr
    assert (vol / "f").read_text() == "from-the-vm\n"
