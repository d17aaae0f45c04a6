"""The control channel between ``sevbox`` CLI calls and a container's monitor process.

A unix SOCK_SEQPACKET socket (``<state dir>/monitor.sock``): each message is one JSON object in one
packet, so message boundaries need no framing, and file descriptors ride along with SCM_RIGHTS (an
exec passes its stdio this way). Requests: ``start``, ``kill``, ``ps``, ``pause``, ``resume``,
``shutdown``, ``exec`` (the connection then stays open: the client may send ``signal`` and
``resize``; the monitor answers ``{"exited": status}`` when the process ends).
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

from sevbox.errors import ContainerError

__all__ = ["MAX_MESSAGE", "Channel", "connect"]

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


def connect(path: Path, timeout: float | None = 10.0) -> Channel:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
    except OSError:
        sock.close()
        raise
    return Channel(sock)
