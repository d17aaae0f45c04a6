"""sevbox driven by a REAL containerd (Debian's 1.6) through its unchanged io.containerd.runc.v2 shim.

A private containerd runs for this module (own config, root/state dirs and socket under a tmp dir, the
CRI plugin off). The image is built here, without any registry: a busybox-static layer in an OCI
image-layout archive, imported with ``ctr images import``. Every container boots a real guest under
TCG; the same scenarios run with Debian's runc as the peer, and the two must agree.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import io
import json
import os
import select
import shutil
import signal
import struct
import subprocess
import tarfile
import tempfile
import termios
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sevbox.guest.image import build_image

pytestmark = [pytest.mark.peers, pytest.mark.vm]

ROOT = Path(__file__).resolve().parents[2]
SEVBOX = ROOT / ".venv" / "bin" / "sevbox"
RUNC = shutil.which("runc") or "/usr/sbin/runc"
IMAGE = "docker.io/sevbox/busybox:test"
NS = "sevbox-test"
APPLETS = ("sh", "echo", "cat", "true", "false", "sleep", "ls", "kill", "env")
CTR_TIMEOUT = 120


# --- the image, made here ------------------------------------------------------------------------


def _layer() -> bytes:
    """An uncompressed tar: /bin/busybox, applet symlinks, the usual empty dirs."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in ("bin", "dev", "etc", "proc", "sys", "tmp"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
            tar.addfile(info)
        data = Path("/bin/busybox").read_bytes()
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
        for a in APPLETS:
            info = tarfile.TarInfo(f"bin/{a}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
    return buf.getvalue()


def oci_archive(path: Path, name: str) -> None:
    """An OCI image-layout archive (oci-layout, index.json, blobs/sha256/*) naming one linux/amd64 image."""
    blobs: dict[str, bytes] = {}

    def blob(data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return f"sha256:{digest}"

    raw = _layer()
    gz = gzip.compress(raw, mtime=0)
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(raw).hexdigest()}"]},
    }).encode()  # fmt: skip
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": blob(config),
                   "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": blob(gz),
                    "size": len(gz)}],
    }).encode()  # fmt: skip
    index = json.dumps({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": blob(manifest),
            "size": len(manifest), "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {"io.containerd.image.name": name,
                            "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1]},
        }],
    }).encode()  # fmt: skip
    with tarfile.open(path, "w") as tar:
        files = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}', "index.json": index}
        files.update({f"blobs/sha256/{d}": b for d, b in blobs.items()})
        for n, data in files.items():
            info = tarfile.TarInfo(n)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


# --- a private containerd ------------------------------------------------------------------------


def pids_mentioning(needle: str, *, also: str = "") -> list[int]:
    """Processes (not zombies) whose command line contains ``needle`` (and ``also``, if given)."""
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{d}/cmdline").read_bytes()
            zombie = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
        except (OSError, IndexError):
            continue
        if not zombie and needle.encode() in cmd and also.encode() in cmd:
            found.append(int(d))
    return found


def mounts_under(top: Path) -> list[str]:
    points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    return [p for p in points if p.startswith(f"{top}/")]


@dataclass
class Containerd:
    top: Path  # everything of this containerd (and of the runtimes it drives) lives under here
    sock: Path
    log: Path

    def runc_root(self, runtime: str) -> Path:
        return self.top / f"root-{runtime}"

    def argv(self, *args: str) -> list[str]:
        """ctr's command line; its IO fifos go under our tmp dir too (not /run/containerd/fifo)."""
        verb = 2 if args[:2] == ("tasks", "exec") else 1 if args[:1] == ("run",) else 0
        fifo = ["--fifo-dir", str(self.top / "fifo")] if verb else []
        return ["ctr", "-a", str(self.sock), "-n", NS, *args[:verb], *fifo, *args[verb:]]

    def ctr(self, *args: str, timeout: float = CTR_TIMEOUT) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(*args),
            capture_output=True, text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL,
        )  # fmt: skip

    def runtime_flags(self, runtime: str) -> list[str]:
        binary = str(SEVBOX) if runtime == "sevbox" else RUNC
        return ["--runc-binary", binary, "--runc-root", str(self.runc_root(runtime))]

    def leftovers(self, runtime: str, cid: str) -> list[str]:
        """What a finished container must not leave: VMs, monitors/proxies, shims, runtime state."""
        left = [f"qemu pid {p}" for p in pids_mentioning("qemu-system", also=str(self.top))]
        left += [f"sevbox pid {p}" for p in pids_mentioning(str(SEVBOX), also=str(self.top))]
        left += [f"shim pid {p}" for p in pids_mentioning("containerd-shim", also=f"\0-id\0{cid}\0")]
        left += [f"mount {m}" for m in mounts_under(self.top) if f"/{cid}/" in m]
        state = self.runc_root(runtime) / NS
        if state.exists():
            left += [f"state {p}" for p in state.iterdir()]
        return left

    def wait_clean(self, runtime: str, cid: str, timeout: float = 10.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while (left := self.leftovers(runtime, cid)) and time.monotonic() < deadline:
            time.sleep(0.1)
        return left


@contextlib.contextmanager
def private_containerd() -> Iterator[Containerd]:
    """A containerd of our own with the test image imported; on exit it, its shims and its tmp dir go."""
    build_image()  # the guest image sevbox boots (cached on disk; built once if missing)
    top = Path(tempfile.mkdtemp(prefix="sbx-ctrd-"))  # short: unix socket paths are limited to 108
    sock = top / "c.sock"
    (top / "config.toml").write_text(
        "version = 2\n"
        f'root = "{top}/root"\n'
        f'state = "{top}/state"\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
        f'[grpc]\n  address = "{sock}"\n'
        f'[ttrpc]\n  address = "{sock}.ttrpc"\n'
        '[debug]\n  level = "debug"\n'
    )
    log = top / "containerd.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["containerd", "--config", str(top / "config.toml")],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
        )  # fmt: skip
    c = Containerd(top, sock, log)
    try:
        deadline = time.monotonic() + 20
        while c.ctr("version", timeout=10).returncode != 0:
            assert proc.poll() is None, f"containerd exited: {log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"containerd did not serve: {log.read_text()[-2000:]}"
            time.sleep(0.1)
        oci_archive(top / "image.tar", IMAGE)
        r = c.ctr("images", "import", str(top / "image.tar"))
        assert r.returncode == 0, r.stderr
        yield c
    finally:
        # shims outlive containerd on purpose (they are daemons): end every one this containerd started
        shims = pids_mentioning("containerd-shim", also=str(sock))
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for pid in shims + pids_mentioning("qemu-system", also=str(top)):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)
        for mnt in sorted(mounts_under(top), reverse=True):  # the rootfs overlays of failed containers
            subprocess.run(["umount", "-l", mnt], capture_output=True, check=False)
        shutil.rmtree(top, ignore_errors=True)


@pytest.fixture(scope="module")
def containerd() -> Iterator[Containerd]:
    with private_containerd() as c:
        yield c


def log_tail(c: Containerd, cid: str) -> str:
    """containerd's log lines about ``cid`` (for assertion messages)."""
    return "\n".join(line for line in c.log.read_text().splitlines() if cid in line)[-3000:]


# --- the checks ----------------------------------------------------------------------------------


@pytest.mark.parametrize("runtime", ["sevbox", "runc"])
def test_run_rm_prints_and_returns_the_exit_status(containerd: Containerd, runtime: str) -> None:
    cid = f"c1-{runtime}"
    r = containerd.ctr("run", "--rm", *containerd.runtime_flags(runtime), IMAGE, cid,
                       "sh", "-c", "echo hello; echo to-stderr >&2; exit 3")  # fmt: skip
    assert (r.returncode, r.stdout) == (3, "hello\n"), (r.stderr, log_tail(containerd, cid))
    assert "to-stderr\n" in r.stderr
    assert cid not in containerd.ctr("containers", "ls", "-q").stdout.split()
    assert containerd.wait_clean(runtime, cid) == []


@pytest.mark.parametrize("runtime", ["sevbox", "runc"])
def test_missing_executable_fails_the_run_and_leaves_nothing(containerd: Containerd, runtime: str) -> None:
    cid = f"c3-{runtime}"
    r = containerd.ctr("run", "--rm", *containerd.runtime_flags(runtime), IMAGE, cid, "/bin/nope")
    assert r.returncode != 0
    assert "/bin/nope" in r.stderr and "no such file" in r.stderr.lower(), r.stderr
    # as with runc: the task is never made, so `--rm` removes the container
    assert containerd.ctr("tasks", "ls", "-q").stdout.split().count(cid) == 0, r.stderr
    assert cid not in containerd.ctr("containers", "ls", "-q").stdout.split(), r.stderr
    assert containerd.wait_clean(runtime, cid) == []


def task_status(c: Containerd, cid: str) -> str:
    for line in c.ctr("tasks", "ls").stdout.splitlines()[1:]:
        fields = line.split()
        if fields and fields[0] == cid:
            return fields[-1]
    return "(none)"


def wait_status(c: Containerd, cid: str, want: str, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while (got := task_status(c, cid)) != want and time.monotonic() < deadline:
        time.sleep(0.1)
    return got


@pytest.mark.parametrize("runtime", ["sevbox", "runc"])
def test_detached_task_exec_ps_pause_kill_delete(containerd: Containerd, runtime: str) -> None:
    c, cid = containerd, f"c2-{runtime}"
    # runc's container process is its pid namespace's init, which ignores SIGTERM unless it handles it;
    # sevbox's is not the guest's init (the agent is), so a plain `sleep` dies of SIGTERM there
    cmd = (
        ["sleep", "1000"] if runtime == "sevbox" else ["sh", "-c", "trap 'exit 143' TERM; sleep 1000 & wait"]
    )
    r = c.ctr("run", "-d", *c.runtime_flags(runtime), IMAGE, cid, *cmd)
    assert r.returncode == 0, (r.stderr, log_tail(c, cid))
    try:
        assert task_status(c, cid) == "RUNNING"
        # the runtime root containerd handed over holds the container while it lives
        assert (c.runc_root(runtime) / NS / cid).is_dir()

        r = c.ctr("tasks", "exec", "--exec-id", "e1", cid, "sh", "-c", "echo in-exec; exit 5")
        assert (r.returncode, r.stdout) == (5, "in-exec\n"), (r.stderr, log_tail(c, cid))

        r = c.ctr("tasks", "ps", cid)
        assert r.returncode == 0, r.stderr
        pids = [line.split()[0] for line in r.stdout.splitlines()[1:] if line.strip()]
        assert pids and all(p.isdigit() for p in pids), r.stdout

        assert c.ctr("tasks", "pause", cid).returncode == 0
        assert task_status(c, cid) == "PAUSED"
        assert c.ctr("tasks", "resume", cid).returncode == 0
        assert task_status(c, cid) == "RUNNING"
        r = c.ctr("tasks", "exec", "--exec-id", "e3", cid, "echo", "after-resume")
        assert (r.returncode, r.stdout) == (0, "after-resume\n"), r.stderr

        r = c.ctr("tasks", "kill", "-s", "SIGTERM", cid)
        assert r.returncode == 0, r.stderr
        assert wait_status(c, cid, "STOPPED") == "STOPPED"
        # nothing can be exec'd into a stopped task; ctr says so rather than hanging
        assert c.ctr("tasks", "exec", "--exec-id", "e4", cid, "true").returncode != 0

        r = c.ctr("tasks", "delete", cid)
        assert r.returncode == 0, r.stderr
        # ctr reports the task's exit status on delete: killed by SIGTERM -> 128 + 15
        assert "exit code 143" in r.stderr, r.stderr
        assert task_status(c, cid) == "(none)"
        assert c.ctr("containers", "delete", cid).returncode == 0
        assert c.wait_clean(runtime, cid) == []
    finally:
        c.ctr("tasks", "delete", "--force", cid)
        c.ctr("containers", "delete", cid)


@pytest.mark.parametrize("runtime", ["sevbox", "runc"])
def test_force_delete_of_a_running_task(containerd: Containerd, runtime: str) -> None:
    c, cid = containerd, f"c4-{runtime}"
    r = c.ctr("run", "-d", *c.runtime_flags(runtime), IMAGE, cid, "sleep", "1000")
    assert r.returncode == 0, (r.stderr, log_tail(c, cid))
    r = c.ctr("tasks", "delete", cid)
    assert r.returncode != 0 and task_status(c, cid) == "RUNNING"  # not without --force
    r = c.ctr("tasks", "delete", "--force", cid)
    assert r.returncode == 0, (r.stderr, log_tail(c, cid))
    assert c.ctr("containers", "delete", cid).returncode == 0
    assert c.wait_clean(runtime, cid) == []


def run_on_a_terminal(c: Containerd, args: list[str], timeout: float = CTR_TIMEOUT) -> tuple[int, bytes]:
    """Run ctr with a pty as its terminal (``ctr run -t`` insists): its exit status and all it printed."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 101, 0, 0))
    proc = subprocess.Popen(c.argv(*args), stdin=slave, stdout=slave,
                            stderr=slave, start_new_session=True)  # fmt: skip
    os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: every slave fd is closed
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
        return proc.wait(timeout=10), out
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_terminal_run_matches_runc(containerd: Containerd) -> None:
    """`ctr run -t`: the shim hands sevbox a console socket; what the user sees is what runc gives."""
    seen = {}
    for runtime in ("sevbox", "runc"):
        cid = f"t1-{runtime}"
        script = "test -t 0 && test -t 1 && echo on-a-tty; exit 4"
        args = ["run", "--rm", "-t", *containerd.runtime_flags(runtime), IMAGE, cid, "sh", "-c", script]
        status, out = run_on_a_terminal(containerd, args)
        assert (status, b"on-a-tty" in out) == (4, True), (runtime, out, log_tail(containerd, cid))
        assert containerd.wait_clean(runtime, cid) == []
        seen[runtime] = out
    assert seen["sevbox"] == seen["runc"]  # line endings included: one pty's worth of CR/LF, not two


def test_terminal_exec_matches_runc(containerd: Containerd) -> None:
    """`ctr task exec -t` into a running task: exec --tty with a console socket, as runc gives it."""
    c, seen = containerd, {}
    for runtime in ("sevbox", "runc"):
        cid = f"t2-{runtime}"
        r = c.ctr(
            "run",
            "-d",
            *c.runtime_flags(runtime),
            IMAGE,
            cid,
            "sh",
            "-c",
            "trap 'exit 0' TERM; sleep 1000 & wait",
        )
        assert r.returncode == 0, (r.stderr, log_tail(c, cid))
        try:
            script = "test -t 0 && test -t 1 && echo exec-on-a-tty; exit 6"
            status, out = run_on_a_terminal(
                c, ["tasks", "exec", "-t", "--exec-id", "x1", cid, "sh", "-c", script]
            )
            assert (status, b"exec-on-a-tty" in out) == (6, True), (runtime, out, log_tail(c, cid))
            seen[runtime] = out.split(b"\x1b[31mERRO")[0]  # ctr may log its own resize race (seen with runc)
        finally:
            c.ctr("tasks", "kill", "-s", "SIGKILL", cid)
            wait_status(c, cid, "STOPPED")
            c.ctr("tasks", "delete", cid)
            c.ctr("containers", "delete", cid)
        assert c.wait_clean(runtime, cid) == []
    assert seen["sevbox"] == seen["runc"]
