"""The state store: one directory per container under ``--root``.

Layout of ``<root>/<id>/``::

    state.json     written by the CLI at create: id, bundle, created, annotations, monitor pid
                   and start time, QEMU pid, launch security (never rewritten by the monitor)
    status         written only by the monitor: one JSON object {"status": ..., "exit": ...}
    monitor.sock   the monitor's control socket (start, kill, exec, ps, pause, resume)
    lock           flock'ed by every CLI verb that changes the container (calls are serialised)
    monitor.log    the monitor's own log

Files are written atomically (temp file, fsync, rename), so a reader never sees half a file and a
crash leaves either the old or the new content.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sevbox.errors import ContainerError, ExistsError, NotFoundError
from sevbox.runtime.ids import validate_id

__all__ = ["Store", "atomic_write"]


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never a torn one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class Store:
    """Containers' state directories under one root (created 0700 on first use)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def dir(self, container_id: str) -> Path:
        return self.root / validate_id(container_id)

    def _ensure_root(self) -> None:
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as err:
            raise ContainerError(f"cannot create state root {self.root}: {err.strerror}") from None

    def create(self, container_id: str) -> Path:
        """Claim the id: make its directory, or raise ExistsError (nothing is overwritten)."""
        self._ensure_root()
        d = self.dir(container_id)
        try:
            d.mkdir(mode=0o700)
        except FileExistsError:
            raise ExistsError(container_id) from None
        except OSError as err:
            raise ContainerError(f"cannot create {d}: {err.strerror}") from None
        return d

    def exists(self, container_id: str) -> bool:
        return (self.dir(container_id) / "state.json").is_file()

    def read_json(self, container_id: str, name: str) -> dict[str, Any]:
        path = self.dir(container_id) / name
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            if name == "state.json":
                raise NotFoundError(container_id) from None
            return {}
        try:
            value = json.loads(raw)
        except ValueError:
            raise ContainerError(f"container {container_id}: {name} is corrupt") from None
        if not isinstance(value, dict):
            raise ContainerError(f"container {container_id}: {name} is corrupt")
        return value

    def write_json(self, container_id: str, name: str, value: dict[str, Any]) -> None:
        atomic_write(self.dir(container_id) / name, json.dumps(value, sort_keys=True).encode())

    def ids(self) -> list[str]:
        try:
            names = sorted(p.name for p in self.root.iterdir() if (p / "state.json").is_file())
        except FileNotFoundError:
            return []
        return names

    def remove(self, container_id: str) -> None:
        shutil.rmtree(self.dir(container_id), ignore_errors=True)

    @contextlib.contextmanager
    def lock(self, container_id: str) -> Iterator[None]:
        """Serialise changes to one container across processes (flock on <id>/lock)."""
        d = self.dir(container_id)
        try:
            fd = os.open(d / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:
            raise NotFoundError(container_id) from None
        except OSError as err:
            if err.errno == errno.ENOENT:
                raise NotFoundError(container_id) from None
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)
