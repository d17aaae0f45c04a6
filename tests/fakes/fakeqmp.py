"""FAKE: a QMP server that answers as QEMU does (greeting, qmp_capabilities, then canned replies).

It stands at exactly the QMP socket: the code under test talks to it with the real qemu.qmp client.
Replies are what QEMU's schema documents for the SEV commands; ``errors`` maps a command to the
GenericError description QEMU gives when SEV isn't there.
"""

from __future__ import annotations

import json
import socket
import threading
from typing import Any


class FakeQmpServer:
    def __init__(self, replies: dict[str, Any], errors: dict[str, str] | None = None) -> None:
        self.replies = replies
        self.errors = errors or {}
        self.received: list[dict[str, Any]] = []
        self.client_sock, self._server_sock = socket.socketpair()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _send(self, f: Any, obj: dict[str, Any]) -> None:
        f.write(json.dumps(obj).encode() + b"\r\n")
        f.flush()

    def _messages(self) -> Any:
        """QMP is a stream of JSON objects (qemu.qmp sends no newlines): decode as they complete."""
        decoder = json.JSONDecoder()
        buf = ""
        while chunk := self._server_sock.recv(65536):
            buf += chunk.decode()
            while buf.strip():
                try:
                    msg, end = decoder.raw_decode(buf.lstrip())
                except ValueError:
                    break
                buf = buf.lstrip()[end:]
                yield msg

    def _serve(self) -> None:
        with self._server_sock, self._server_sock.makefile("wb") as f:
            self._send(f, {"QMP": {"version": {"qemu": {"micro": 2, "minor": 0, "major": 10}, "package": ""},
                                   "capabilities": ["oob"]}})  # fmt: skip
            for msg in self._messages():
                self.received.append(msg)
                cmd, ident = msg.get("execute"), msg.get("id")
                reply: dict[str, Any]
                if cmd == "qmp_capabilities":
                    reply = {"return": {}}
                elif cmd in self.errors:
                    reply = {"error": {"class": "GenericError", "desc": self.errors[cmd]}}
                elif cmd in self.replies:
                    reply = {"return": self.replies[cmd]}
                else:
                    desc = f"The command {cmd} has not been found"
                    reply = {"error": {"class": "CommandNotFound", "desc": desc}}
                if ident is not None:
                    reply["id"] = ident
                self._send(f, reply)

    def close(self) -> None:
        self.client_sock.close()
        self._thread.join(5)
