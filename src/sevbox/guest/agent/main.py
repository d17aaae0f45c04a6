"""The guest agent, PID 1 in the micro-VM. Stdlib only; imports kept few (they cost boot time).

Boot: mount /proc, /sys, /dev; load the kernel modules for the transport named on the kernel
command line (``sevbox.transport=mmio|pci``) with finit_module(2); open the virtio-serial port named
``sevbox.port`` (default ``sevbox.0``); send a Ready event with boot-stage timings; then serve
requests (see :mod:`sevbox.protocol`) until Shutdown. Every frame is validated; a bad one is answered
with an error (or a Rejected event) and the agent keeps serving. PID 1 must never exit: on a fatal
error it reboots the VM, which ends QEMU (``-no-reboot``).

A container is entered with chroot (the initramfs root cannot be pivoted away from).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import select
import signal
import stat
import time

from sevbox import protocol as P

PORT_DEFAULT = "sevbox.0"
ROOT = "/run/container"
READ_CHUNK = 256 * 1024
STDIN_HIGH_WATER = 8 << 20  # stop reading the channel while this much stdin is queued

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
SYS_FINIT_MODULE = 313
F_SETPIPE_SZ = 1031
PIPE_SIZE = 1 << 20
PR_SET_KEEPCAPS = 8
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
RB_AUTOBOOT = 0x01234567
TIOCSCTTY = 0x540E
TIOCSWINSZ = 0x5414

CAPS = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
    "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)  # fmt: skip

_libc = ctypes.CDLL(None, use_errno=True)


def boottime() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")


def mount(
    source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None
) -> None:
    _check(
        _libc.mount(
            source.encode() if source is not None else None,
            target.encode(),
            fstype.encode() if fstype is not None else None,
            ctypes.c_ulong(flags),
            data.encode() if data is not None else None,
        ),
        f"mount {fstype or 'bind'} on {target}",
    )


def log(msg: str) -> None:
    try:
        os.write(2, f"sevbox-agent: {msg}\n".encode(errors="replace"))
    except OSError:
        pass


# --- boot ------------------------------------------------------------------------------------


def early_mounts() -> None:
    for src, target, fstype, flags in (
        ("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC),
        ("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC),
        ("devtmpfs", "/dev", "devtmpfs", MS_NOSUID),
    ):
        try:
            mount(src, target, fstype, flags)
        except OSError as err:
            if err.errno != errno.EBUSY:
                raise
    # The initramfs has no /dev/console node, so the kernel started us with fds 0-2 closed: give
    # them the console (the agent's fatal messages reach the serial log; and no later open can
    # land on 0-2, where a child's stdio is dup2'ed).
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            c = os.open("/dev/console", os.O_RDWR | os.O_NOCTTY)
            if c != fd:
                os.dup2(c, fd)
                os.close(c)
    os.makedirs("/dev/pts", exist_ok=True)
    mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620")
    mount("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755")


def kernel_params() -> dict[str, str]:
    with open("/proc/cmdline") as f:
        words = f.read().split()
    return {w.partition("=")[0]: w.partition("=")[2] for w in words if w.startswith("sevbox.")}


def load_modules(transport: str) -> None:
    with open("/etc/sevbox/modules") as f:
        table = {line.split()[0]: line.split()[1:] for line in f if line.strip()}
    for name in table.get(transport, []):
        fd = os.open(f"/lib/modules/{name}.ko", os.O_RDONLY | os.O_CLOEXEC)
        try:
            if _libc.syscall(SYS_FINIT_MODULE, fd, b"", 0) != 0:
                e = ctypes.get_errno()
                if e != errno.EEXIST:
                    raise OSError(e, f"loading module {name}: {os.strerror(e)}")
        finally:
            os.close(fd)


def find_port(name: str, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    base = "/sys/class/virtio-ports"
    while True:
        try:
            for dev in os.listdir(base):
                try:
                    with open(f"{base}/{dev}/name") as f:
                        if f.read().strip() == name:
                            path = f"/dev/{dev}"
                            if os.path.exists(path):
                                return path
                except OSError:
                    pass
        except FileNotFoundError:
            pass
        if time.monotonic() > deadline:
            raise OSError(errno.ENODEV, f"virtio-serial port {name!r} did not appear")
        time.sleep(0.005)


# --- processes -------------------------------------------------------------------------------


class Proc:
    """One process in the container: its pid, stdio fds, queued stdin, and its end."""

    def __init__(self, exec_id: str, spec: P.ProcessSpec) -> None:
        self.exec_id = exec_id
        self.spec = spec
        self.pid = 0
        self.status: int | None = None
        self.stdin_fd = -1  # write end (or the pty master)
        self.out_fds: dict[int, int] = {}  # fd -> frame kind (stdout/stderr)
        self.stdin_buf = bytearray()
        self.stdin_closing = False
        self.master = -1
        self.waiters: list[int] = []  # request ids waiting for the exit
        self.exit_reported = False


def _setup_caps(caps: dict[str, tuple[str, ...]] | None) -> None:
    if caps is None:
        return
    nums = {n: i for i, n in enumerate(CAPS)}
    bounding = {nums[c] for c in caps.get("bounding", ()) if c in nums}
    last = len(CAPS)
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            last = int(f.read()) + 1
    except OSError:
        pass
    for cap in range(last):
        if cap not in bounding:
            _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)


def _capset(caps: dict[str, tuple[str, ...]]) -> None:
    nums = {n: i for i, n in enumerate(CAPS)}

    def mask(key: str) -> int:
        m = 0
        for c in caps.get(key, ()):
            if c in nums:
                m |= 1 << nums[c]
        return m

    eff, perm, inh = mask("effective"), mask("permitted"), mask("inheritable")
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this thread
    data = (ctypes.c_uint32 * 6)(
        eff & 0xFFFFFFFF, perm & 0xFFFFFFFF, inh & 0xFFFFFFFF, eff >> 32, perm >> 32, inh >> 32
    )
    _check(_libc.capset(header, data), "capset")
    for c in caps.get("ambient", ()):
        if c in nums:
            _libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, nums[c], 0, 0)


DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _exec(args: list[str], env: dict[str, str]) -> None:
    """execvp with the container's PATH, without os.execvpe (which imports modules lazily: after
    chroot the agent's stdlib is out of reach)."""
    prog = args[0]
    if "/" in prog:
        os.execve(prog, args, env)  # noqa: S606
    denied: OSError | None = None
    for d in env.get("PATH", DEFAULT_PATH).split(":"):
        try:
            os.execve(f"{d or '.'}/{prog}", args, env)  # noqa: S606
        except PermissionError as err:
            denied = err
        except (FileNotFoundError, NotADirectoryError):
            pass
    if denied is not None:
        raise denied
    raise FileNotFoundError(errno.ENOENT, "executable file not found in $PATH")


def find_program(prog: str, path: str) -> tuple[int, str] | None:
    """runc's create-time check, in the container's root: None if ``prog`` names an executable file
    (with a '/': that path; else the first hit along ``path``), else (127, why) when nothing is there
    and (126, why) when what is there can't be executed. An error it can't judge is left to exec."""
    candidates = [prog] if "/" in prog else [f"{d or '.'}/{prog}" for d in path.split(":")]
    denied = ""
    for cand in candidates:
        try:
            mode = os.stat(cand).st_mode
        except (FileNotFoundError, NotADirectoryError):
            continue
        except PermissionError:
            denied = "Permission denied"
            continue
        except OSError:
            return None
        if stat.S_ISDIR(mode):
            denied = denied or ("Is a directory" if "/" in prog else "Permission denied")
        elif not mode & 0o111:
            denied = "Permission denied"
        else:
            return None
    if denied:
        return 126, f"exec {prog!r}: {denied}"
    if "/" in prog:
        return 127, f"exec {prog!r}: No such file or directory"
    return 127, f"exec: {prog!r}: executable file not found in $PATH"


def check_program(spec: P.ProcessSpec, root: str) -> tuple[int, str] | None:
    """find_program for a container's process, in a child chrooted into ``root`` (so absolute
    symlinks resolve inside it) and in the process's cwd (for relative paths)."""
    r, w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # pragma: no cover (child)
        try:
            os.close(r)
            os.chroot(root)
            os.chdir(spec.cwd)
            env = dict(e.split("=", 1) for e in spec.env if "=" in e)
            found = find_program(spec.args[0], env.get("PATH", DEFAULT_PATH))
            if found is not None:
                os.write(w, bytes([found[0]]) + found[1].encode(errors="replace")[:1000])
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    return (data[0], data[1:].decode(errors="replace")) if data else None


def _child(spec: P.ProcessSpec, root: str, stdio: tuple[int, int, int], tty: int, errfd: int) -> None:
    """In the forked child: enter the container and exec. Never returns."""
    try:
        os.setsid()
        if tty >= 0:
            import fcntl

            fcntl.ioctl(tty, TIOCSCTTY, 0)
        for i, fd in enumerate(stdio):
            os.dup2(fd, i)
        os.chroot(root)
        os.chdir(spec.cwd)
        if spec.rlimits:
            import resource  # imported before the fork (an extension module, out of reach here)

            for r in spec.rlimits:
                soft = resource.RLIM_INFINITY if r.soft >= 1 << 63 else r.soft
                hard = resource.RLIM_INFINITY if r.hard >= 1 << 63 else r.hard
                resource.setrlimit(getattr(resource, r.type), (soft, hard))
        if spec.umask is not None:
            os.umask(spec.umask)
        _setup_caps(spec.capabilities)
        if spec.capabilities is not None:
            _libc.prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0)
        os.setgroups(list(spec.additional_gids))
        os.setgid(spec.gid)
        os.setuid(spec.uid)
        if spec.capabilities is not None:
            _capset(spec.capabilities)
        if spec.no_new_privileges:
            _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
        _exec(list(spec.args), dict(e.split("=", 1) for e in spec.env))
    except BaseException as err:  # report to the agent, then die: never fall back into the agent
        code = 127 if isinstance(err, FileNotFoundError) else 126
        if isinstance(err, FileNotFoundError) and err.filename is None and "/" not in spec.args[0]:
            msg = f"exec: {spec.args[0]!r}: executable file not found in $PATH"
        elif isinstance(err, OSError):
            msg = f"exec {spec.args[0]!r}: {err.strerror or err}"
            if err.filename not in (None, spec.args[0]):
                msg += f" ({err.filename})"
        else:
            msg = f"exec {spec.args[0]!r}: {type(err).__name__}: {err}"
        try:
            os.write(errfd, bytes([code]) + msg.encode(errors="replace")[:1000])
        finally:
            os._exit(code)


# --- the agent -------------------------------------------------------------------------------


class Agent:
    def __init__(self, chan: int, timings: dict[str, float]) -> None:
        self.chan = chan
        self.timings = timings
        self.decoder = P.Decoder()
        self.spec: P.ContainerSpec | None = None
        self.root = ROOT
        self.procs: dict[str, Proc] = {}
        self.by_pid: dict[int, Proc] = {}
        self.fd_owner: dict[int, Proc] = {}
        self.poll = select.poll()
        self.running = True
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.poll.register(self.wake_r, select.POLLIN)
        self.poll.register(self.chan, select.POLLIN)
        self.chan_paused = False

    # -- output to the host --
    def send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.chan, view)
            except InterruptedError:
                continue
            except BlockingIOError:
                select.select([], [self.chan], [], 1.0)
                continue
            view = view[n:]

    def send_data(self, kind: int, exec_id: str, data: bytes) -> None:
        """A data frame without copying the data into it (writev)."""
        head = P.data_header(kind, exec_id, len(data))
        try:
            n = os.writev(self.chan, (head, data))
        except (BlockingIOError, InterruptedError):
            n = 0
        if n < len(head) + len(data):
            self.send((head + data)[n:])

    def respond(self, req_id: int, ok: bool, error: str = "", **kw: object) -> None:
        msg = P.Response(ok, error[:4000], **kw)  # type: ignore[arg-type]
        self.send(P.encode_message(P.Kind.RESPONSE, req_id, msg))

    def event(self, msg: P._Message) -> None:
        self.send(P.encode_message(P.Kind.EVENT, 0, msg))

    # -- main loop --
    def serve(self) -> None:
        self.timings["ready"] = boottime()
        self.event(P.Ready(P.VERSION, self.timings))
        while self.running:
            try:
                ready = self.poll.poll()
            except InterruptedError:
                continue
            for fd, ev in ready:
                if fd == self.wake_r:
                    self._drain_wake()
                    self._reap()
                elif fd == self.chan:
                    self._read_chan()
                elif fd in self.fd_owner:
                    self._on_proc_fd(fd, ev)

    def _drain_wake(self) -> None:
        try:
            while os.read(self.wake_r, 256):
                pass
        except BlockingIOError:
            pass

    def _read_chan(self) -> None:
        try:
            data = os.read(self.chan, READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        if not data:
            # The host side is not connected; poll would spin: wait a little.
            time.sleep(0.05)
            return
        try:
            frames = self.decoder.feed(data)
        except P.ProtocolError as err:
            self.event(P.Rejected(str(err)))
            frames = []
            while True:  # the decoder resynchronised: take what follows
                try:
                    frames += self.decoder.feed(b"")
                    break
                except P.ProtocolError as err2:
                    self.event(P.Rejected(str(err2)))
        for kind, req_id, payload in frames:
            self._on_frame(kind, req_id, payload)

    def _on_frame(self, kind: int, req_id: int, payload: bytes) -> None:
        if kind == P.Kind.STDIN:
            try:
                exec_id, data = P.decode_data(payload)
            except P.ProtocolError as err:
                self.event(P.Rejected(str(err)))
                return
            proc = self.procs.get(exec_id)
            if proc is None or proc.stdin_fd < 0 or proc.stdin_closing:
                return  # stdin for a process that is gone or closed: dropped, as a closed pipe would
            proc.stdin_buf += data
            self._want_write(proc)
            return
        if kind != P.Kind.REQUEST:
            self.event(P.Rejected(f"unexpected frame kind {kind} from the host"))
            return
        try:
            msg = P.decode_request(payload)
        except P.ProtocolError as err:
            self.respond(req_id, False, f"rejected: {err}")
            return
        handler = getattr(self, "do_" + msg.TYPE)
        try:
            handler(req_id, msg)
        except OSError as err:
            self.respond(req_id, False, str(err.strerror if err.strerror else err))
        except Exception as err:  # a handler bug must not kill PID 1
            self.respond(req_id, False, f"agent error: {type(err).__name__}: {err}")

    # -- requests --
    def do_Ping(self, req_id: int, msg: P.Ping) -> None:
        self.respond(req_id, True)

    def do_GuestInfo(self, req_id: int, msg: P.GuestInfo) -> None:
        # The canary lives in this process's (guest-private) memory; only its inverse leaves.
        canary = getattr(self, "canary", None)
        if canary is None:
            canary = self.canary = os.urandom(32)
        if msg.marker_inverted:
            self.marker = bytes(b ^ 0xFF for b in bytes.fromhex(msg.marker_inverted))
        self.respond(
            req_id,
            True,
            info={
                "canary_inverted": bytes(b ^ 0xFF for b in canary).hex(),
                "memory_encryption": memory_encryption_line(),
                "sev_status": read_sev_status(),
            },
        )

    def do_CreateContainer(self, req_id: int, msg: P.CreateContainer) -> None:
        if self.spec is not None:
            self.respond(req_id, False, "a container already exists in this VM")
            return
        spec = msg.container
        setup_container(spec, self.root)
        # as runc: a program that isn't there fails create, so the caller (containerd) never gets a
        # task that can only fail to start; what the check can't see still fails at start (127/126)
        missing = check_program(spec.process, self.root)
        if missing is not None:
            self.respond(req_id, False, missing[1], status=missing[0])
            return
        self.spec = spec
        self.procs[""] = Proc("", spec.process)
        self.respond(req_id, True)

    def do_StartContainer(self, req_id: int, msg: P.StartContainer) -> None:
        proc = self.procs.get("")
        if proc is None:
            self.respond(req_id, False, "no container created")
            return
        if proc.pid:
            self.respond(req_id, False, "the container was already started")
            return
        self._spawn(req_id, proc)

    def do_ExecProcess(self, req_id: int, msg: P.ExecProcess) -> None:
        if "" not in self.procs or not self.procs[""].pid:
            self.respond(req_id, False, "the container is not running")
            return
        if msg.exec_id in self.procs:
            self.respond(req_id, False, f"exec id {msg.exec_id!r} is in use")
            return
        proc = Proc(msg.exec_id, msg.process)
        self.procs[msg.exec_id] = proc
        self._spawn(req_id, proc)

    def do_SignalProcess(self, req_id: int, msg: P.SignalProcess) -> None:
        proc = self.procs.get(msg.exec_id)
        if proc is None or not proc.pid or proc.status is not None:
            self.respond(req_id, False, f"process {msg.exec_id!r} is not running")
            return
        os.kill(proc.pid, msg.signal)
        self.respond(req_id, True)

    def do_WaitProcess(self, req_id: int, msg: P.WaitProcess) -> None:
        proc = self.procs.get(msg.exec_id)
        if proc is None:
            self.respond(req_id, False, f"no process {msg.exec_id!r}")
        elif proc.exit_reported:
            self.respond(req_id, True, status=proc.status)
        else:
            proc.waiters.append(req_id)

    def do_CloseStdin(self, req_id: int, msg: P.CloseStdin) -> None:
        proc = self.procs.get(msg.exec_id)
        if proc is None:
            self.respond(req_id, False, f"no process {msg.exec_id!r}")
            return
        proc.stdin_closing = True
        self._want_write(proc)
        self.respond(req_id, True)

    def do_ResizeTty(self, req_id: int, msg: P.ResizeTty) -> None:
        proc = self.procs.get(msg.exec_id)
        if proc is None or proc.master < 0:
            self.respond(req_id, False, f"process {msg.exec_id!r} has no terminal")
            return
        _winsize(proc.master, msg.rows, msg.cols)
        self.respond(req_id, True)

    def do_ListProcesses(self, req_id: int, msg: P.ListProcesses) -> None:
        pids = []
        for name in os.listdir("/proc"):
            if name.isdigit() and name != "1":
                try:
                    with open(f"/proc/{name}/cmdline", "rb") as f:
                        if f.read(1):
                            pids.append(int(name))
                except OSError:
                    pass
        self.respond(req_id, True, pids=tuple(sorted(pids)))

    def do_Shutdown(self, req_id: int, msg: P.Shutdown) -> None:
        for proc in self.procs.values():
            if proc.pid and proc.status is None:
                try:
                    os.kill(proc.pid, signal.SIGKILL)
                except OSError:
                    pass
        self.respond(req_id, True)
        power_off()

    # -- process plumbing --
    def _spawn(self, req_id: int, proc: Proc) -> None:
        spec = proc.spec
        if spec.rlimits:
            import resource  # noqa: F401 (the child cannot import it after chroot)
        errr, errw = os.pipe2(os.O_CLOEXEC)
        close_after: list[int] = []
        tty = -1
        if spec.terminal:
            master, slave = os.openpty()
            if spec.console_size:
                _winsize(master, *spec.console_size)
            stdio = (slave, slave, slave)
            tty = slave
            close_after = [slave]
            proc.master = master
            proc.stdin_fd = master
            proc.out_fds = {master: P.Kind.STDOUT}
        else:
            in_r, in_w = os.pipe2(os.O_CLOEXEC)
            out_r, out_w = os.pipe2(os.O_CLOEXEC)
            err_r, err_w = os.pipe2(os.O_CLOEXEC)
            for fd in (in_w, out_r, err_r):  # bigger pipes: fewer, larger frames (throughput)
                try:
                    fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_SIZE)
                except OSError:
                    pass
            stdio = (in_r, out_w, err_w)
            close_after = [in_r, out_w, err_w]
            proc.stdin_fd = in_w
            proc.out_fds = {out_r: P.Kind.STDOUT, err_r: P.Kind.STDERR}
        pid = os.fork()
        if pid == 0:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            _child(spec, self.root, stdio, tty, errw)
        os.close(errw)
        for fd in close_after:
            os.close(fd)
        proc.pid = pid
        self.by_pid[pid] = proc
        failure = b""
        while True:
            try:
                chunk = os.read(errr, 1024)
            except InterruptedError:
                continue
            if not chunk:
                break
            failure += chunk
        os.close(errr)
        for fd in (proc.stdin_fd, *proc.out_fds):
            os.set_blocking(fd, False)
        for fd in proc.out_fds:
            self.fd_owner[fd] = proc
            self.poll.register(fd, select.POLLIN)
        if proc.stdin_fd not in proc.out_fds:
            self.fd_owner[proc.stdin_fd] = proc
        if failure:
            self.respond(req_id, False, failure[1:].decode(errors="replace"), status=failure[0])
        else:
            self.respond(req_id, True, pids=(pid,))
        self._reap()

    def _want_write(self, proc: Proc) -> None:
        fd = proc.stdin_fd
        if fd < 0:
            return
        self._flush_stdin(proc)
        if proc.stdin_fd < 0:
            return
        mask = select.POLLOUT if proc.stdin_buf else 0
        if fd in proc.out_fds:
            self.poll.register(fd, select.POLLIN | mask)
        elif mask:
            self.poll.register(fd, mask)
        else:
            try:
                self.poll.unregister(fd)
            except KeyError:
                pass
        self._throttle()

    def _throttle(self) -> None:
        queued = sum(len(p.stdin_buf) for p in self.procs.values())
        if queued > STDIN_HIGH_WATER and not self.chan_paused:
            self.poll.register(self.chan, 0)
            self.chan_paused = True
        elif queued <= STDIN_HIGH_WATER and self.chan_paused:
            self.poll.register(self.chan, select.POLLIN)
            self.chan_paused = False

    def _flush_stdin(self, proc: Proc) -> None:
        while proc.stdin_buf:
            try:
                n = os.write(proc.stdin_fd, proc.stdin_buf[:READ_CHUNK])
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # EPIPE: the process closed its stdin; drop what is queued
                proc.stdin_buf.clear()
                break
            del proc.stdin_buf[:n]
        if proc.stdin_closing and proc.stdin_fd not in proc.out_fds:
            self._close_fd(proc.stdin_fd)
            proc.stdin_fd = -1
        elif proc.stdin_closing and proc.master >= 0:
            os.write(proc.master, b"\x04")  # EOF for a terminal: ^D
            proc.stdin_closing = False

    def _close_fd(self, fd: int) -> None:
        try:
            self.poll.unregister(fd)
        except KeyError:
            pass
        self.fd_owner.pop(fd, None)
        try:
            os.close(fd)
        except OSError:
            pass

    def _on_proc_fd(self, fd: int, ev: int) -> None:
        proc = self.fd_owner[fd]
        if fd in proc.out_fds and ev & (select.POLLIN | select.POLLHUP | select.POLLERR):
            self._pump(proc, fd, once=True)
        if fd == proc.stdin_fd and ev & select.POLLOUT:
            self._want_write(proc)
        elif fd == proc.stdin_fd and fd not in proc.out_fds and ev & (select.POLLERR | select.POLLHUP):
            proc.stdin_buf.clear()
            self._close_fd(fd)
            proc.stdin_fd = -1
            self._throttle()
        self._maybe_exited(proc)

    def _pump(self, proc: Proc, fd: int, once: bool) -> None:
        """Forward output; at EOF (or EIO on a pty whose slave is gone) close the fd."""
        kind = proc.out_fds[fd]
        while True:
            try:
                data = os.read(fd, P.MAX_DATA)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:
                del proc.out_fds[fd]
                if fd == proc.stdin_fd:
                    proc.stdin_fd = -1
                    proc.master = -1
                self._close_fd(fd)
                return
            self.send_data(kind, proc.exec_id, data)
            if once:
                return

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            proc = self.by_pid.pop(pid, None)
            if proc is None:
                continue  # an orphan re-parented to PID 1
            code = os.waitstatus_to_exitcode(status)
            proc.status = code if code >= 0 else 128 - code
            if proc.exec_id == "":
                # The container's init has ended: as when a PID namespace's init dies, nothing else
                # of the container survives it (background children would hold its pipes open).
                try:
                    os.kill(-1, signal.SIGKILL)  # every process but PID 1 (us)
                except OSError:
                    pass
            # The process is gone: what it wrote is in the pipes; forward it all, then report.
            for fd in list(proc.out_fds):
                self._pump(proc, fd, once=False)
            self._maybe_exited(proc)

    def _maybe_exited(self, proc: Proc) -> None:
        if proc.status is None or proc.exit_reported:
            return
        if proc.out_fds and proc.master < 0:
            return  # pipes still open (a child of the process holds them): wait for EOF
        if proc.master >= 0:
            for fd in list(proc.out_fds):
                self._pump(proc, fd, once=False)
            for fd in list(proc.out_fds):
                del proc.out_fds[fd]
                self._close_fd(fd)
            proc.master = -1
        if proc.stdin_fd >= 0:
            self._close_fd(proc.stdin_fd)
            proc.stdin_fd = -1
        proc.stdin_buf.clear()
        self._throttle()
        proc.exit_reported = True
        self.event(P.Exited(proc.exec_id, proc.status))
        for w in proc.waiters:
            self.respond(w, True, status=proc.status)
        proc.waiters.clear()


def _winsize(fd: int, rows: int, cols: int) -> None:
    import fcntl
    import struct

    fcntl.ioctl(fd, TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


# --- container setup -------------------------------------------------------------------------


def _inside(root: str, path: str) -> str:
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise OSError(errno.EINVAL, f"path {path!r} leaves the container")
    return root + "/" + "/".join(parts)


_DEVICES = (
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
)


def setup_container(spec: P.ContainerSpec, root: str) -> None:
    # launch secrets are read before anything is mounted: a missing one leaves nothing behind
    secrets = read_secrets(spec.secrets, find_secret_area()) if spec.secrets else []
    os.makedirs(root, exist_ok=True)
    mount(
        spec.rootfs_tag,
        root,
        "9p",
        0,
        "trans=virtio,version=9p2000.L,msize=262144,cache=none,access=client",
    )
    has_dev = False
    for i, m in enumerate(spec.mounts):
        target = _inside(root, m.destination)
        flags, data = _mount_options(m.options)
        if m.type == "file":  # a host file bound from outside the rootfs: its copy, on our tmpfs
            import binascii

            os.makedirs("/run/sevbox-files", exist_ok=True)
            copy = f"/run/sevbox-files/{i}"
            with open(copy, "wb") as f:
                f.write(binascii.a2b_base64(m.data))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            if not os.path.lexists(target):
                open(target, "ab").close()
            mount(copy, target, None, MS_BIND)
            if flags & MS_RDONLY:
                mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY)
            continue
        os.makedirs(target, exist_ok=True)
        if m.type == "bind":
            src = _inside(root, m.source)
            mount(src, target, None, MS_BIND | (flags & MS_REC))
            if flags & MS_RDONLY:
                mount(None, target, None, MS_REMOUNT | MS_BIND | flags)
            continue
        if m.type == "9p":  # a host directory shared over its own virtio-9p device (a volume)
            opts = "trans=virtio,version=9p2000.L,msize=262144,cache=none,access=client"
            mount(m.source, target, "9p", flags & ~(MS_BIND | MS_REC | MS_RDONLY), opts)  # not a bind
            if flags & MS_RDONLY:
                mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY)
            continue
        if m.type in ("cgroup", "cgroup2"):
            try:
                mount("cgroup2", target, "cgroup2", flags, data or None)
            except OSError as err:
                log(f"cgroup mount on {m.destination} skipped: {err}")
            continue
        if m.type == "devpts":
            data = ",".join(x for x in ("newinstance", "ptmxmode=0666", data) if x)
        mount(m.source or m.type, target, m.type, flags, data or None)
        if m.destination.rstrip("/") == "/dev":
            has_dev = True
            for name, major, minor in _DEVICES:
                os.mknod(f"{target}/{name}", 0o20666, os.makedev(major, minor))
            os.symlink("pts/ptmx", f"{target}/ptmx")
            for name, src in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                              ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):  # fmt: skip
                os.symlink(src, f"{target}/{name}")
    if not has_dev and os.path.isdir(root + "/dev"):
        mount("/dev", root + "/dev", None, MS_BIND | MS_REC)
    for path in spec.masked_paths:
        target = _inside(root, path)
        if os.path.isdir(target):
            mount("tmpfs", target, "tmpfs", MS_RDONLY)
        elif os.path.exists(target):
            mount("/dev/null", target, None, MS_BIND)
    for path in spec.readonly_paths:
        target = _inside(root, path)
        if os.path.exists(target):
            mount(target, target, None, MS_BIND | MS_REC)
            mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_REC)
    for key, value in spec.sysctl.items():
        with open("/proc/sys/" + key.replace(".", "/"), "w") as f:
            f.write(value)
    if spec.hostname:
        host = spec.hostname.encode()
        _check(_libc.sethostname(host, len(host)), "sethostname")
    if secrets:  # launch secrets (see the section below)
        place_secrets(secrets, root, uid=spec.process.uid, gid=spec.process.gid, mount_fn=mount)
    if spec.readonly:
        mount(None, root, None, MS_REMOUNT | MS_BIND | MS_RDONLY)


# --- launch secrets (attest owner; separate from the rest of the agent) ----------------------
# An SEV guest owner injects secrets into the firmware's secret area before the guest runs
# (sevbox attest inject); Linux shows each one at securityfs secrets/coco/<GUID> through the
# efi_secret module. The bundle annotation sevbox.secrets = "name=GUID[,...]" asks for each to be
# copied to /run/secrets/<name> (mode 0400, owned by the process's user) on a tmpfs: guest memory,
# encrypted under SEV, never the 9p share (that is the host's disk).

SECURITYFS = "/sys/kernel/security"
SECRET_AREA = SECURITYFS + "/secrets/coco"
MAX_SECRET = 1 << 20
SECRETS_STAGE = "/run/sevbox-secrets"  # the agent's own tmpfs (guest memory), outside the container


def find_secret_area() -> str:
    """The securityfs directory of injected secrets (mounting securityfs if needed), or "" if none."""
    if not os.path.isdir(SECRET_AREA):
        try:
            mount("securityfs", SECURITYFS, "securityfs", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        except OSError as err:
            log(f"securityfs: {err}")
    return SECRET_AREA if os.path.isdir(SECRET_AREA) else ""


def read_secrets(secrets: tuple[tuple[str, str], ...], area: str) -> list[tuple[str, bytes]]:
    """Read each (name, GUID) secret from ``area`` (securityfs secrets/coco, or "" when absent).
    Errors are OSErrors whose strerror is the message the host shows."""
    if not area:
        raise OSError(
            errno.ENOENT,
            f"no launch secret area: {SECRET_AREA} does not exist in the guest (the kernel shows "
            "secrets injected into an SEV guest there through the efi_secret module; it is not "
            "loaded, or the VM was not launched with SEV and a secret)",
        )
    found: list[tuple[str, bytes]] = []
    for name, guid in secrets:
        try:
            fd = os.open(f"{area}/{guid}", os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            raise OSError(errno.ENOENT, f"launch secret {name!r} ({guid}) is missing from {area}") from None
        try:
            data = os.read(fd, MAX_SECRET + 1)
        finally:
            os.close(fd)
        if len(data) > MAX_SECRET:
            raise OSError(errno.EFBIG, f"launch secret {name!r} ({guid}) is larger than {MAX_SECRET} bytes")
        found.append((name, data))
    return found


def place_secrets(found: list[tuple[str, bytes]], root: str, *, uid: int, gid: int,
                  stage: str = SECRETS_STAGE, mount_fn: object = None) -> str:  # fmt: skip
    """Make <root>/run/secrets/<name> (mode 0400, owned by uid:gid) for each secret; return the path.

    The files are written into ``stage`` (a tmpfs of the agent's own, mounted with ``mount_fn``),
    never through the container's rootfs (its 9p share is the host's disk, and the host may swap
    symlinks in it); then that tmpfs is bind-mounted onto /run/secrets."""
    os.makedirs(stage, mode=0o700, exist_ok=True)
    if callable(mount_fn):
        mount_fn("tmpfs", stage, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0755,size=2m")
    dfd = os.open(stage, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        for name, data in found:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(name, flags, 0o400, dir_fd=dfd)
            try:
                os.write(fd, data)
                os.fchmod(fd, 0o400)
                os.fchown(fd, uid, gid)
            finally:
                os.close(fd)
    finally:
        os.close(dfd)
    target = _inside(root, "/run/secrets")
    os.makedirs(target, mode=0o755, exist_ok=True)
    if callable(mount_fn):
        mount_fn(stage, target, None, MS_BIND)
    return target


_FLAGS = {
    "ro": MS_RDONLY, "nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "rbind": MS_BIND | MS_REC,
    "bind": MS_BIND, "rprivate": 0, "private": 0, "relatime": 0, "rw": 0, "strictatime": 0,
}  # fmt: skip


def _mount_options(options: tuple[str, ...]) -> tuple[int, str]:
    flags = 0
    data = []
    for o in options:
        if o in _FLAGS:
            flags |= _FLAGS[o]
        else:
            data.append(o)
    return flags, ",".join(data)


def read_sev_status() -> str:
    """MSR 0xC0010131 (SEV_STATUS) of CPU 0 as hex, via the msr driver; or why it can't be read.
    On AMD it says which of SEV/SEV-ES/SNP protect this guest; other CPUs have no such MSR."""
    try:
        fd = os.open("/dev/cpu/0/msr", os.O_RDONLY)
    except OSError as err:
        return f"unavailable (/dev/cpu/0/msr: {err.strerror})"
    try:
        raw = os.pread(fd, 8, 0xC0010131)
    except OSError as err:
        return f"unavailable (rdmsr 0xc0010131: {err.strerror})"
    finally:
        os.close(fd)
    return hex(int.from_bytes(raw, "little")) if len(raw) == 8 else "unavailable (short read)"


def memory_encryption_line() -> str:
    """What the guest kernel said about memory encryption at boot ("Memory Encryption Features
    active: AMD SEV SEV-ES ..."), from /dev/kmsg; "none reported" when it said nothing."""
    try:
        fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    except OSError as err:
        return f"unknown (/dev/kmsg: {err.strerror})"
    try:
        while True:
            try:
                rec = os.read(fd, 8192).decode(errors="replace")
            except BlockingIOError:
                return "none reported"
            except OSError as err:
                if err.errno == errno.EPIPE:  # the ring buffer overwrote records: keep reading
                    continue
                return f"unknown (/dev/kmsg: {err.strerror})"
            if not rec:
                return "none reported"
            text = rec.split(";", 1)[-1].strip()
            if "Memory Encryption Features active" in text:
                return text
    finally:
        os.close(fd)


def power_off() -> None:
    _libc.sync()
    _libc.reboot(RB_AUTOBOOT)  # QEMU runs with -no-reboot and the guest with reboot=t: QEMU exits
    while True:
        time.sleep(1)


def _exec_time() -> float:
    """When the kernel ran /init, from its "Run /init" log record (the kernel log has it even
    with ``quiet``); 0.0 if not found."""
    try:
        fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return 0.0
    try:
        while True:
            try:
                rec = os.read(fd, 8192)
            except BlockingIOError:
                return 0.0
            except OSError:  # EPIPE: a record was overwritten; keep reading
                continue
            if not rec:
                return 0.0
            head, _, text = rec.partition(b";")
            if text.startswith(b"Run /init"):
                return int(head.split(b",")[2]) / 1e6
    finally:
        os.close(fd)


def main() -> None:
    timings = {"main": boottime()}
    try:
        early_mounts()
        timings["init"] = _exec_time()
        params = kernel_params()
        load_modules(params.get("sevbox.transport", "mmio"))
        timings["modules"] = boottime()
        path = find_port(params.get("sevbox.port", PORT_DEFAULT))
        chan = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        timings["port"] = boottime()
        Agent(chan, timings).serve()
    except BaseException as err:
        log(f"fatal: {type(err).__name__}: {err}")
    power_off()


if __name__ == "__main__":
    main()
