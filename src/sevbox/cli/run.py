"""``sevbox run``: create and start a container in its own micro-VM, wait for it, exit with its status.

Thin: load the bundle, boot a :class:`sevbox.sandbox.Sandbox`, relay stdio until the process ends.
Prints nothing of its own on stdout; errors go to stderr as ``sevbox: <message>``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import struct
import sys
import termios
import tty
from collections.abc import Iterator
from pathlib import Path

from sevbox.errors import ContainerError, UsageError

__all__ = ["configure"]

DESCRIPTION = """\
Create and start a container in its own micro-VM, wait for it to finish, and exit with its status:
the exit code of the container's process, or 128+N when it was killed by signal N (as runc).
The bundle's rootfs is shared into the guest (virtio-9p), so files the container writes appear in
the bundle. stdin/stdout/stderr are relayed both ways; with process.terminal true, a terminal is
wired (this one, or the pty sent to --console-socket). Signals sent to sevbox (INT, TERM, HUP, QUIT,
USR1, USR2) are forwarded to the container's process.

examples:
  sevbox run --bundle ./mybundle c1
  echo hello | sevbox --root /tmp/sevbox run -b ./mybundle c2; echo "status $?"
  SEVBOX_ACCEL=tcg sevbox run --bundle . c3        # force TCG (default: KVM if it really works)
"""


def configure(verb: str, parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.add_argument(
        "--bundle", "-b", default=".", help="bundle directory holding config.json (default: .)"
    )
    parser.add_argument(
        "--detach", "-d", action="store_true", help="start the container and return; its monitor keeps it"
    )
    parser.add_argument("--pid-file", help="with --detach: write the monitor's pid here (digits only)")
    parser.add_argument(
        "--console-socket",
        metavar="SOCKET",
        help="unix socket to receive the pty master (SCM_RIGHTS) when process.terminal is true",
    )
    parser.add_argument("--no-pivot", action="store_true", help="accepted (the guest always uses chroot)")
    parser.add_argument("--no-new-keyring", action="store_true", help="accepted (no host keyring is used)")
    parser.add_argument("--keep", action="store_true", help="accepted for runc compatibility")
    parser.add_argument(
        "--memory", type=int, default=None, metavar="MIB", help="guest memory in MiB (default: config, 256)"
    )
    parser.add_argument("--vcpus", type=int, default=None, help="guest vCPUs (default: config, 1)")
    parser.add_argument(
        "--vm-log-dir",
        metavar="DIR",
        help="keep QEMU's and the guest console's logs in DIR (default: discarded)",
    )
    parser.add_argument("container_id", metavar="ID", help="container id (letters, digits, _ + - .)")
    parser.set_defaults(handler=_run)


def _validate_id(container_id: str) -> None:
    from sevbox.runtime.ids import validate_id

    validate_id(container_id)


@contextlib.contextmanager
def _raw(fd: int) -> Iterator[None]:
    """Put a terminal in raw mode (the guest's pty does the line discipline) and restore it."""
    try:
        saved = termios.tcgetattr(fd)
    except termios.error:
        yield
        return
    try:
        tty.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _run(args: argparse.Namespace) -> int:
    _validate_id(args.container_id)
    if args.detach:
        return _run_detached(args)
    if args.pid_file:
        raise UsageError("--pid-file needs --detach")
    from sevbox.runtime.bundle import load_bundle
    from sevbox.sandbox import ProcessStartError, Sandbox, relay

    bundle = load_bundle(Path(args.bundle))
    if bundle.process is None:
        raise ContainerError("config.json has no process to run")
    terminal = bundle.process.terminal
    if args.console_socket and not terminal:
        raise ContainerError("--console-socket given but process.terminal is false")
    if bundle.annotations.get("sevbox.attestation") == "pre-launch":
        raise ContainerError("annotation sevbox.attestation=pre-launch: use create, attest, then start")
    # launch security first: a configuration the host can't honour fails here, before any VM starts
    from sevbox.config import load_config
    from sevbox.runtime.vmplan import owner_session, plan_launch, sandbox_args
    from sevbox.sandbox import volumes

    config = load_config(args.config).with_annotations(bundle.annotations)
    launch_args = sandbox_args(plan_launch(config), config, owner_session(bundle.annotations, bundle.path))
    launch_args["readonly_rootfs"] = bundle.readonly
    launch_args["volumes"] = volumes(bundle)
    if args.memory is not None:
        launch_args["memory_mib"] = args.memory
    if args.vcpus is not None:
        launch_args["vcpus"] = args.vcpus
    log_dir = Path(args.vm_log_dir) if args.vm_log_dir else None
    master = slave = -1
    try:
        if terminal and args.console_socket:
            master, slave = os.openpty()
            tty.setraw(slave)
            if bundle.process.console_size:
                rows, cols = bundle.process.console_size
                fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
            from sevbox.runtime.container import send_console

            send_console(args.console_socket, master)
            os.close(master)
            master = -1
        name = args.container_id
        with Sandbox.launch(rootfs=bundle.rootfs, name=name, log_dir=log_dir, **launch_args) as sb:
            try:
                sb.create_container(bundle)  # a program that isn't there fails here (as runc)
                sb.start_container()
            except ProcessStartError as err:
                print(f"sevbox: {err}", file=sys.stderr)
                return err.status
            if slave >= 0:
                status = relay(sb, "", slave, slave, slave, tty_fd=slave)
            elif terminal and os.isatty(0):
                with _raw(0):
                    status = relay(sb, "", 0, 1, 1, tty_fd=0)
            else:
                status = relay(sb, "", 0, 1, 2 if not terminal else 1)
            sb.shutdown(timeout=3.0)
            return status
    finally:
        for fd in (master, slave):
            if fd >= 0:
                os.close(fd)


def _run_detached(args: argparse.Namespace) -> int:
    """create, then start, as runc run --detach does: the create hooks run before the process."""
    from sevbox.runtime.bundle import load_bundle
    from sevbox.runtime.container import Container
    from sevbox.runtime.store import Store

    if load_bundle(Path(args.bundle)).annotations.get("sevbox.attestation") == "pre-launch":
        raise ContainerError("annotation sevbox.attestation=pre-launch: use create, attest, then start")
    store = Store(Path(args.root))
    c = Container.create(
        store,
        args.container_id,
        args.bundle,
        pid_file=args.pid_file,
        console_socket=args.console_socket,
        config_path=args.config,
    )
    try:
        c.start()
    except BaseException:
        c.destroy()
        raise
    return 0
