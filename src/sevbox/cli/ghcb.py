"""``sevbox ghcb decode``: explain a GHCB MSR value or a GHCB page dump (parsing and printing only).

The codec is :mod:`sevbox.sev.ghcb`.
"""

from __future__ import annotations

import argparse
import json
import re
import string
import sys
from typing import Any

from sevbox.errors import FormatError, SevboxError, UsageError

__all__ = ["configure", "parse_value"]

_DESCRIPTION = """\
Explain what an SEV-ES guest and its hypervisor said to each other (AMD GHCB spec #56421): a GHCB
MSR value (MSR 0xC0010130: SEV info, CPUID, AP reset hold, GHCB GPA preference/registration, page
state change, run at VMPL, hypervisor features, termination reason) or a 4096-byte GHCB page
(binary, or hex text). For a page, the NAE event its SW_EXITCODE names is shown with the state it
must carry; a page that lacks that state (missing valid-bitmap bits) is flagged and the command
exits 1 -- useful when reading KVM traces (kvm_vmgexit_enter/exit, kvm_vmgexit_msr_protocol_*).

VALUE is hex with 0x (0x8000001f00000004), or 16 hex digits as KVM traces print them, or decimal.

examples:
  sevbox ghcb decode 0x0002000133000001        # SEV info response: protocol 1..2, C-bit 51
  sevbox ghcb decode 8000000000000004           # CPUID request, function 0x80000000, EAX
  sevbox ghcb decode 0x31100 --json             # termination request, Linux reason 3
  sevbox ghcb decode --event 0x7c               # MSR access: RCX in; RAX/RDX for a write
  sevbox ghcb decode --page ghcb.bin            # a page as the guest handed it over
  sevbox ghcb decode --page after.bin --response --request-page before.bin
"""


def configure(verb: str, parser: argparse.ArgumentParser) -> None:
    from sevbox.cli import Parser, _Formatter

    parser.set_defaults(subparser=parser)
    sub = parser.add_subparsers(dest="ghcb_verb", metavar="SUB-COMMAND", parser_class=Parser)
    dec = sub.add_parser(
        "decode",
        help="explain a GHCB MSR value or a GHCB page dump",
        description=_DESCRIPTION,
        formatter_class=_Formatter,
    )
    dec.add_argument("value", nargs="?", metavar="VALUE", help="a 64-bit GHCB MSR value")
    dec.add_argument("--page", metavar="FILE", help="a GHCB page dump (4096 bytes, or hex text; '-' stdin)")
    dec.add_argument(
        "--response",
        action="store_true",
        help="the page is the hypervisor's answer: check the state returned, not the state sent",
    )
    dec.add_argument(
        "--request-page",
        metavar="FILE",
        help="with --response: the page as the guest sent it (decides e.g. MSR read vs write)",
    )
    dec.add_argument(
        "--gpa",
        metavar="ADDR",
        help="the page's guest-physical address: SW_SCRATCH must then point into its shared buffer",
    )
    dec.add_argument(
        "--event",
        metavar="CODE",
        help="explain an NAE event code (SW_EXITCODE, e.g. 0x72 or 0x80000010 from kvm_vmgexit_enter): "
        "what state it carries in and out",
    )
    dec.add_argument("--json", action="store_true", help="print machine-readable JSON")
    dec.set_defaults(handler=_decode)


def parse_value(text: str) -> int:
    """An MSR value: 0x-prefixed hex, 16 bare hex digits (trace style), hex with letters, or decimal."""
    t = text.strip().replace("_", "")
    bare_hex = bool(t) and all(c in string.hexdigits for c in t) and (len(t) == 16 or not t.isdigit())
    try:
        value = int(t, 16) if t.lower().startswith("0x") or bare_hex else int(t, 10)
    except ValueError:
        raise UsageError(f"not a number: {text!r} (hex needs 0x, e.g. 0x1004)") from None
    if not 0 <= value < 1 << 64:
        raise UsageError(f"{text!r} is not a 64-bit value")
    return value


def _read_page(path: str) -> bytes:
    from sevbox.sev.ghcb import GHCB_SIZE

    try:
        if path == "-":
            data = sys.stdin.buffer.read(64 * 1024)
        else:
            with open(path, "rb") as fh:
                data = fh.read(64 * 1024)
    except OSError as err:
        raise SevboxError(f"cannot read {path}: {err.strerror or err}") from None
    if len(data) == GHCB_SIZE:
        return data
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        text = ""
    digits = re.sub(r"\s+", "", text)
    if text and re.fullmatch(r"[0-9a-fA-F]*", digits) and len(digits) == 2 * GHCB_SIZE:
        return bytes.fromhex(digits)
    raise FormatError(
        f"{path}: a GHCB page is {GHCB_SIZE} bytes (or {2 * GHCB_SIZE} hex digits); got {len(data)} bytes",
        what="GHCB page",
    )


def _event(args: argparse.Namespace) -> int:
    from sevbox.sev import ghcb

    if args.response or args.request_page or args.gpa:
        raise UsageError("--response, --request-page and --gpa go with --page")
    code = parse_value(args.event)
    event = ghcb.nae_event(code)
    if event is None:
        raise UsageError(f"{code:#x} is not an NAE event code this tool knows")
    inputs = ["SW_EXIT_CODE", "SW_EXIT_INFO_1", "SW_EXIT_INFO_2", *(n.describe() for n in event.inputs)]
    outputs = ["SW_EXIT_INFO_1 (result)", *(n.describe() for n in event.outputs)]
    if args.json:
        doc = {"code": f"{code:#x}", "name": event.name, "inputs": inputs, "outputs": outputs}
        print(json.dumps(doc | {"notes": event.notes}, indent=2))
    else:
        lines = [("event", f"{code:#x} {event.name}"), ("guest sends", ", ".join(inputs))]
        lines.append(("hypervisor returns", ", ".join(outputs)))
        if event.notes:
            lines.append(("note", event.notes))
        _print_lines(lines)
    return 0


def _print_lines(lines: list[tuple[str, str]]) -> None:
    width = max((len(label) for label, _ in lines), default=0)
    for label, text in lines:
        print(f"{label:<{width}}  {text}")


def _decode(args: argparse.Namespace) -> int:
    from sevbox.sev import ghcb

    if sum(x is not None for x in (args.value, args.page, args.event)) != 1:
        raise UsageError("give one of VALUE, --page FILE or --event CODE")
    if args.event is not None:
        return _event(args)
    if args.value is not None:
        if args.response or args.request_page or args.gpa:
            raise UsageError("--response, --request-page and --gpa go with --page")
        msg = ghcb.decode_msr(parse_value(args.value))
        if args.json:
            out = msg.to_json() | {"explain": [{"label": a, "text": b} for a, b in msg.explain()]}
            print(json.dumps(out, indent=2))
        else:
            _print_lines(msg.explain())
        return 0
    if args.request_page and not args.response:
        raise UsageError("--request-page goes with --response")
    page = ghcb.Ghcb.decode(_read_page(args.page))
    request = ghcb.Ghcb.decode(_read_page(args.request_page)) if args.request_page else None
    gpa = parse_value(args.gpa) if args.gpa else None
    findings = ghcb.check_page(
        page, direction="response" if args.response else "request", request=request, ghcb_gpa=gpa
    )
    errors = sum(1 for f in findings if f.severity == "error")
    if args.json:
        event = ghcb.nae_event(page.get("sw_exit_code"))
        doc: dict[str, Any] = page.to_json() | {
            "direction": "response" if args.response else "request",
            "event": None
            if event is None
            else {
                "code": f"{event.code:#x}",
                "name": event.name,
                "inputs": [n.describe() for n in event.inputs],
                "outputs": [n.describe() for n in event.outputs],
                "notes": event.notes,
            },
            "findings": [f.to_json() for f in findings],
            "ok": errors == 0,
        }
        print(json.dumps(doc, indent=2))
    else:
        _print_lines(ghcb.explain_page(page))
        for f in findings:
            print(f"{f.severity.upper()}: {f.message}")
        if not findings:
            print("ok: the page carries the state its event needs")
    return 1 if errors else 0
