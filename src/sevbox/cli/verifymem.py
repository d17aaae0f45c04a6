"""``sevbox verify-memory ID``: is this container's guest memory really encrypted? Look and see.

The guest agent keeps a fresh random canary (and, with --marker, the owner's own text) in its private
memory and tells the host only its bitwise NOT. This verb then reads the QEMU process's memory
(/proc/PID/maps, /proc/PID/mem: run it as root) looking for the canary's plaintext. Found: guest
memory is NOT encrypted. Not found in N MiB scanned: consistent with SEV doing its job. Run it first
on any new SEV host. Exit 0 when nothing was found, 1 when plaintext is visible (or on error).
"""

from __future__ import annotations

import argparse
import json

from sevbox.errors import ContainerError, UsageError

__all__ = ["configure"]


def configure(verb: str, p: argparse.ArgumentParser) -> None:
    p.description = __doc__.split("\n\n", 1)[1] if __doc__ else None
    p.add_argument("container_id", metavar="ID", help="a created, running or paused container")
    p.add_argument("--marker", help="also look for this text (placed in guest memory by the agent)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from sevbox.runtime import memscan, procs
    from sevbox.runtime.container import LIVE, Container
    from sevbox.runtime.store import Store

    c = Container.load(Store(args.root), args.container_id)
    c._require("verify-memory", LIVE)
    marker = args.marker.encode() if args.marker else None
    if marker is not None and not 16 <= len(marker) <= 4096:
        raise UsageError("--marker must be 16 to 4096 bytes long (it must be unmistakable)")
    reply = c.ask({"op": "canary", "marker_inverted": memscan.invert(marker).hex() if marker else None})
    try:
        canary = memscan.invert(bytes.fromhex(str(reply["canary_inverted"])))
    except (KeyError, ValueError):
        raise ContainerError("the guest agent sent a malformed canary") from None
    rec = c.record()
    qemu_pid = rec.get("qemu_pid")
    if not procs.alive(qemu_pid, rec.get("qemu_start")):
        raise ContainerError(f"container {c.id}: its QEMU process is gone")
    assert isinstance(qemu_pid, int)
    try:
        found = memscan.scan(qemu_pid, canary)
        marker_found = memscan.scan(qemu_pid, marker) if marker else None
    except PermissionError:
        raise ContainerError("reading QEMU's memory needs root (ptrace access)") from None
    mode = rec.get("annotations", {}).get("sevbox.launch-security.effective", "unknown")
    mib = found.scanned / (1 << 20)
    visible = bool(found.hits) or bool(marker_found and marker_found.hits)
    result = {
        "id": c.id,
        "launch_security": mode,
        "qemu_pid": qemu_pid,
        "scanned_mib": round(mib, 1),
        "regions": found.regions,
        "canary_found": [hex(h.address) for h in found.hits],
        "marker_found": [hex(h.address) for h in marker_found.hits] if marker_found else None,
        "encrypted": not visible,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    elif visible:
        first = (found.hits or (marker_found.hits if marker_found else []))[0]
        print(f"plaintext visible at {first.address:#x} (offset {first.offset:#x} of a "
              f"{first.region.size >> 20} MiB region of QEMU pid {qemu_pid}): guest memory is NOT "
              f"encrypted (launch security: {mode})")  # fmt: skip
    else:
        print(f"canary not found in {mib:.0f} MiB scanned ({found.regions} regions of QEMU pid {qemu_pid}): "
              f"consistent with encrypted guest memory (launch security: {mode})")  # fmt: skip
    return 1 if visible else 0
