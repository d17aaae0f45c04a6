"""The control channel between ``sevbox`` CLI calls and a container's monitor process.

A unix SOCK_SEQPACKET socket (``<state dir>/monitor.sock``): each message is one JSON object in one
packet, so message boundaries need no framing, and file descriptors ride along with SCM_RIGHTS (an
exec passes its stdio this way). Requests: ``start``, ``kill``, ``ps``, ``pause``, ``resume``,
``shutdown``, ``exec`` (the connection then stays open: the client may send ``signal`` and
``resize``; the monitor answers ``{"exited": status}`` when the process ends).
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sevbox.errors import ContainerError

__all__ = ["MAX_MESSAGE", "Channel", "connect", "listen"]

MAX_MESSAGE = 1 << 20


class Channel:
    """One end of a control connection."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def send(self, message: dict[str, Any], fds: list[int] | None = None) -> None:
        data = json.dumps(message).encode()
        if len(data) > MAX_MESSAGE:
            raise ContainerError("control message too large")
        if fds:
            socket.send_fds(self.sock, [data], fds)
        else:
            self.sock.send(data)

    def recv(self, max_fds: int = 0) -> tuple[dict[str, Any] | None, list[int]]:
        """One message (None at end of stream) and any fds that came with it."""
        if max_fds:
            data, fds, _flags, _addr = socket.recv_fds(self.sock, MAX_MESSAGE, max_fds)
        else:
            data, fds = self.sock.recv(MAX_MESSAGE), []
        if not data:
            return None, fds
        try:
            value = json.loads(data)
        except ValueError:
            value = None
        if not isinstance(value, dict):
            raise ContainerError("malformed control message")
        return value, fds

    def request(self, message: dict[str, Any], fds: list[int] | None = None) -> dict[str, Any]:
        self.send(message, fds)
        reply, _ = self.recv()
        if reply is None:
            raise ContainerError("container monitor closed the connection")
        if "error" in reply:
            raise ContainerError(str(reply["error"]))
        return reply

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()


def _via_dirfd(path: Path, op: Callable[[str], None]) -> None:
    """bind or connect to a unix socket at ``path`` of any length: sun_path holds 107 bytes, and
    Docker's state dirs (/var/run/docker/runtime-X/moby/<64 hex>/) are longer than that, so the path
    goes through /proc/self/fd/N/, N an O_PATH fd of its directory."""
    if len(os.fsencode(path)) < 100:
        op(str(path))
        return
    dirfd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        op(f"/proc/self/fd/{dirfd}/{path.name}")
    finally:
        os.close(dirfd)


def listen(path: Path, backlog: int = 16) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        _via_dirfd(path, sock.bind)
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock


def connect(path: Path, timeout: float | None = 10.0) -> Channel:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    sock.settimeout(timeout)
    try:
        _via_dirfd(path, sock.connect)
    except OSError:
        sock.close()
        raise
    return Channel(sock)
