"""SEV over QMP: the commands a guest owner's pre-attestation needs, parsed and checked.

Transport-free: each function takes ``execute(command, arguments) -> result`` (the monitor passes its
qemu.qmp connection's; tests pass a fake QMP server's). QEMU's schema (qapi/misc-target.json,
misc-i386.json): ``query-sev`` -> SevInfo, ``query-sev-launch-measure`` -> {data}, ``query-sev-
capabilities`` -> SevCapability, ``sev-inject-launch-secret`` {packet-header, secret, gpa?}.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sevbox.errors import FormatError, VmError

__all__ = [
    "Execute",
    "SevCapabilities",
    "SevInfo",
    "inject_launch_secret",
    "legacy_execute",
    "query_sev",
    "query_sev_capabilities",
    "query_sev_launch_measure",
]

Execute = Callable[[str, Mapping[str, Any] | None], Any]

# SevState as QEMU reports it (the firmware's guest states)
SEV_STATES = ("uninit", "launch-update", "launch-secret", "running", "send-update", "receive-update")


@dataclass(frozen=True)
class SevInfo:
    enabled: bool
    api_major: int
    api_minor: int
    build_id: int
    state: str
    sev_type: str  # "sev" (SEV and SEV-ES) or "sev-snp"
    policy: int  # u32 SEV policy, or u64 SNP policy
    handle: int | None


@dataclass(frozen=True)
class SevCapabilities:
    pdh: bytes
    cert_chain: bytes
    cpu0_id: bytes
    cbitpos: int
    reduced_phys_bits: int


def _obj(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise FormatError(f"{what}: QEMU answered {type(value).__name__}, not an object", what=what)
    return value


def _int(d: Mapping[str, Any], key: str, what: str) -> int:
    v = d.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise FormatError(f"{what}: field {key!r} missing or not a non-negative integer", what=what)
    return v


def _b64(d: Mapping[str, Any], key: str, what: str) -> bytes:
    v = d.get(key)
    if not isinstance(v, str):
        raise FormatError(f"{what}: field {key!r} missing or not a string", what=what)
    try:
        return base64.b64decode(v, validate=True)
    except (binascii.Error, ValueError):
        raise FormatError(f"{what}: field {key!r} is not base64", what=what) from None


def legacy_execute(qmp: Any) -> Execute:
    """An ``execute`` over a connected ``qemu.qmp.legacy.QEMUMonitorProtocol``: QMP errors become
    VmError carrying QEMU's own description."""

    def execute(command: str, arguments: Mapping[str, Any] | None) -> Any:
        reply = qmp.cmd_raw(command, dict(arguments) if arguments else None)
        if "error" in reply:
            desc = reply["error"].get("desc", "error") if isinstance(reply["error"], dict) else reply["error"]
            raise VmError(f"QEMU refused {command}: {desc}")
        return reply.get("return")

    return execute


def query_sev(execute: Execute) -> SevInfo:
    what = "query-sev"
    d = _obj(execute("query-sev", None), what)
    enabled = d.get("enabled")
    if not isinstance(enabled, bool):
        raise FormatError("query-sev: field 'enabled' missing", what=what)
    sev_type = d.get("sev-type", "sev")
    if sev_type not in ("sev", "sev-snp"):
        raise FormatError(f"query-sev: unknown sev-type {sev_type!r}", what=what)
    state = d.get("state")
    if not isinstance(state, str):
        raise FormatError("query-sev: field 'state' missing", what=what)
    policy = _int(d, "snp-policy" if sev_type == "sev-snp" else "policy", what)
    handle = d.get("handle") if isinstance(d.get("handle"), int) else None
    return SevInfo(
        enabled=enabled, api_major=_int(d, "api-major", what), api_minor=_int(d, "api-minor", what),
        build_id=_int(d, "build-id", what), state=state, sev_type=sev_type, policy=policy, handle=handle,
    )  # fmt: skip


def query_sev_launch_measure(execute: Execute) -> bytes:
    """The 48-byte launch measurement (32-byte HMAC || 16-byte MNONCE) of a paused SEV/SEV-ES guest."""
    data = _b64(_obj(execute("query-sev-launch-measure", None), "query-sev-launch-measure"), "data",
                "query-sev-launch-measure")  # fmt: skip
    if len(data) != 48:
        raise FormatError(
            f"query-sev-launch-measure: measurement is {len(data)} bytes, expected 48",
            what="query-sev-launch-measure",
        )
    return data


def query_sev_capabilities(execute: Execute) -> SevCapabilities:
    what = "query-sev-capabilities"
    d = _obj(execute("query-sev-capabilities", None), what)
    return SevCapabilities(
        pdh=_b64(d, "pdh", what), cert_chain=_b64(d, "cert-chain", what),
        cpu0_id=_b64(d, "cpu0-id", what) if "cpu0-id" in d else b"",
        cbitpos=_int(d, "cbitpos", what), reduced_phys_bits=_int(d, "reduced-phys-bits", what),
    )  # fmt: skip


def inject_launch_secret(execute: Execute, *, header: bytes, payload: bytes, gpa: int | None = None) -> None:
    """Inject a LAUNCH_SECRET packet (header from ``sevbox attest secret``) into a paused guest."""
    if len(header) != 52:
        raise FormatError(f"secret header is {len(header)} bytes, expected 52", what="secret header")
    if not payload or len(payload) % 16:
        raise FormatError("secret payload must be a non-empty multiple of 16 bytes", what="secret payload")
    args: dict[str, Any] = {
        "packet-header": base64.b64encode(header).decode(),
        "secret": base64.b64encode(payload).decode(),
    }
    if gpa is not None:
        args["gpa"] = gpa
    result = execute("sev-inject-launch-secret", args)
    if result not in ({}, None):
        raise VmError(f"sev-inject-launch-secret: unexpected answer {result!r}")
