"""OCI lifecycle hooks, run on the host with the container's state JSON on stdin, as runc runs them.

createRuntime, prestart (deprecated) and createContainer run during ``create``; a failing one fails
the create. poststart runs after ``start``; poststop during ``delete``: a failing one of those is
logged as a warning and the lifecycle goes on (runtime spec, "Lifecycle"). startContainer hooks
would run inside the container's namespaces; in a VM that means inside the guest, which would run
host binaries in the guest: sevbox refuses a bundle that has them (see bundle validation).
"""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

from sevbox.errors import ContainerError

__all__ = ["HOOK_KINDS", "run_hooks"]

log = logging.getLogger(__name__)

HOOK_KINDS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")


def _one(hook: Mapping[str, Any], state: Mapping[str, Any]) -> None:
    path = hook.get("path")
    if not isinstance(path, str) or not path.startswith("/"):
        raise ContainerError(f"hook path must be an absolute path: {path!r}")
    args = hook.get("args") or [path]
    env = hook.get("env") or []
    timeout = hook.get("timeout")
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise ContainerError(f"hook {path}: args must be a list of strings")
    if not isinstance(env, list) or not all(isinstance(e, str) and "=" in e for e in env):
        raise ContainerError(f"hook {path}: env must be a list of KEY=VALUE strings")
    if timeout is not None and (not isinstance(timeout, int) or timeout <= 0):
        raise ContainerError(f"hook {path}: timeout must be a positive integer")
    environ = dict(e.split("=", 1) for e in env)
    try:
        proc = subprocess.run(
            args,
            executable=path,
            input=json.dumps(state).encode(),
            env=environ,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ContainerError(f"hook {path} timed out after {timeout} s") from None
    except OSError as err:
        raise ContainerError(f"hook {path} could not run: {err.strerror}") from None
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).decode(errors="replace").strip().splitlines()
        tail = f": {detail[-1]}" if detail else ""
        raise ContainerError(f"hook {path} failed with exit status {proc.returncode}{tail}")


def run_hooks(
    hooks: Mapping[str, Any] | None,
    kind: str,
    state: Mapping[str, Any],
    *,
    fatal: bool,
) -> None:
    """Run every hook of ``kind`` in order. ``fatal``: the first failure raises; else it is logged."""
    entries: Sequence[Any] = (hooks or {}).get(kind) or []
    for hook in entries:
        if not isinstance(hook, Mapping):
            raise ContainerError(f"{kind} hook must be an object")
        try:
            _one(hook, state)
        except ContainerError as err:
            if fatal:
                raise ContainerError(f"{kind} {err}") from None
            log.warning("%s %s", kind, err)
