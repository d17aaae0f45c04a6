"""``sevbox libvirt xml`` and ``sevbox libvirt lint``: parsing and printing only.

The work lives in :mod:`sevbox.libvirt.domain` (generation) and :mod:`sevbox.libvirt.lint` (checks).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import sys
from pathlib import Path
from typing import Any

from sevbox.errors import SevboxError, UsageError

__all__ = ["configure"]

_MAX_INPUT = 16 * 1024 * 1024  # a domain XML or blob larger than this is not one

_XML_DESCRIPTION = """\
Print a complete libvirt domain XML for an AMD SEV, SEV-ES or SEV-SNP guest that follows every rule
of libvirt's "Launch security with AMD SEV" guide: q35, OVMF (stateless when the launch is attested
or SNP), launchSecurity with cbitpos/reducedPhysBits/policy (and dhCert/session when attesting),
iommu='on' on every virtio device, the disk on virtio-scsi, no option ROM on virtio-net, no balloon,
SMM off for SEV-ES/SNP, and memory pinned by a hard limit (RAM + 256 MiB) or <locked/>. With
--kernel the launch measures kernel, initrd and command line too (kernelHashes='yes').

cbitpos and reducedPhysBits default to this host's values when it has SEV (CPUID 0x8000001F, as
'sevbox check' reports them), else to 51 and 1 (AMD Milan/Genoa; Naples and Rome use cbitpos 47).
The XML comment at the top says which was used.

examples:
  sevbox libvirt xml --name web --memory 2048 --vcpus 2 --disk /var/lib/libvirt/images/web.qcow2 \\
      --network default > web.xml && virsh define web.xml
  sevbox libvirt xml --launch-security sev-es --name es1 --memory 1024 --vcpus 1 \\
      --disk /dev/vg0/es1 --dh-cert godh.b64 --session session.b64 --locked-memory
  sevbox libvirt xml --launch-security sev-es --firmware /usr/share/edk2/ovmf/OVMF.amdsev.fd \
      --kernel vmlinuz --initrd initrd.img --cmdline "console=ttyS0" --name k1 --memory 512 \
      --vcpus 1 --disk /srv/k1.raw
  sevbox libvirt xml --launch-security sev-snp --firmware /usr/share/edk2/ovmf/OVMF.amdsev.fd \\
      --name snp1 --memory 4096 --vcpus 4 --disk /srv/snp1.raw --policy 0x30000
"""

_LINT_DESCRIPTION = """\
Check a domain XML against each rule of libvirt's SEV guide, and against libvirt's schema when
virt-xml-validate is installed. Each finding has a rule id, a severity (error|warning), the element
path and how to fix it. Exit status: 0 when there are no errors (warnings fail only with --strict),
1 otherwise.

rules: not-sev, firmware-seabios, machine-i440fx (warning), virtio-transitional, virtio-iommu,
virtio-net-rom, memory-not-pinned, hard-limit-low (warning), nvram-attested, virtio-blk-boot
(warning), policy-debug (warning), policy-invalid, attest-incomplete, attest-blob,
smm-encrypted-state, launch-security, kernel-hashes (warning), schema

examples:
  sevbox libvirt lint /etc/libvirt/qemu/web.xml
  virsh dumpxml web | sevbox libvirt lint - --json --strict
"""


def configure(verb: str, parser: argparse.ArgumentParser) -> None:
    from sevbox.cli import Parser, _Formatter

    parser.set_defaults(subparser=parser)
    sub = parser.add_subparsers(dest="libvirt_verb", metavar="SUB-COMMAND", parser_class=Parser)

    xml = sub.add_parser(
        "xml",
        help="print a libvirt domain XML for an SEV, SEV-ES or SNP guest",
        description=_XML_DESCRIPTION,
        formatter_class=_Formatter,
    )
    xml.add_argument(
        "--launch-security",
        choices=("sev", "sev-es", "sev-snp"),
        default="sev",
        help="sev (memory encryption), sev-es (also register state; the policy gets the ES bit) or "
        "sev-snp (libvirt >= 10.5, QEMU >= 9.1); default sev",
    )
    xml.add_argument("--name", required=True, help="the domain name")
    xml.add_argument("--memory", type=int, required=True, metavar="MiB", help="guest RAM in MiB")
    xml.add_argument("--vcpus", type=int, required=True, metavar="N", help="number of vCPUs")
    xml.add_argument(
        "--disk",
        required=True,
        metavar="PATH",
        help="the boot disk: an image file (.qcow2 is qcow2, anything else raw) or a block device "
        "under /dev; attached to virtio-scsi",
    )
    xml.add_argument(
        "--kernel",
        metavar="PATH",
        help="boot this kernel directly; the launch then measures kernel, initrd and command line "
        "(kernelHashes='yes'; needs firmware with the SEV hashes table, e.g. edk2's AmdSev build)",
    )
    xml.add_argument("--initrd", metavar="PATH", help="initrd for --kernel")
    xml.add_argument("--cmdline", metavar="TEXT", help="kernel command line for --kernel")
    xml.add_argument("--network", metavar="NAME", help="attach a virtio NIC to this libvirt network")
    xml.add_argument(
        "--firmware",
        metavar="PATH",
        help="OVMF build to boot (default /usr/share/OVMF/OVMF_CODE_4M.fd; for SNP a unified image, "
        "default /usr/share/ovmf/OVMF.fd, but pass an SNP-capable build such as edk2's AmdSev one)",
    )
    xml.add_argument(
        "--nvram-template",
        metavar="PATH",
        help="OVMF variable store template for a non-attested SEV/SEV-ES guest "
        "(default /usr/share/OVMF/OVMF_VARS_4M.fd with the default firmware)",
    )
    xml.add_argument(
        "--policy",
        metavar="P",
        help="guest policy: a number (0x0003) or flag names joined by commas (NODBG,NOKS,ES; for SNP "
        "SMT,... ). Default 0x0003 (sev), 0x0007 (sev-es), 0x30000 (sev-snp)",
    )
    xml.add_argument(
        "--dh-cert",
        metavar="FILE",
        help="guest owner's GODH certificate (base64 text or the raw 2084 bytes) for an attested launch",
    )
    xml.add_argument(
        "--session",
        metavar="FILE",
        help="launch session blob (base64 text or the raw 128 bytes); needs --dh-cert",
    )
    pin = xml.add_mutually_exclusive_group()
    pin.add_argument(
        "--locked-memory",
        action="store_true",
        help="pin with <memoryBacking><locked/> (no per-VM limit: cap machine.slice on the host)",
    )
    pin.add_argument(
        "--hard-limit",
        metavar="auto|KiB",
        default="auto",
        help="memory hard limit: auto = guest RAM + 256 MiB (the default), or a number of KiB",
    )
    xml.add_argument(
        "--cbitpos", type=int, metavar="N", help="C-bit position (default: this host's, else 51)"
    )
    xml.add_argument(
        "--reduced-phys-bits",
        type=int,
        metavar="N",
        help="physical address bits lost to encryption (default: this host's, else 1)",
    )
    xml.add_argument("-o", "--output", metavar="FILE", help="write the XML to FILE instead of stdout")
    xml.set_defaults(handler=_xml)

    lint = sub.add_parser(
        "lint",
        help="check a domain XML against libvirt's SEV rules",
        description=_LINT_DESCRIPTION,
        formatter_class=_Formatter,
    )
    lint.add_argument("file", metavar="FILE", help="domain XML file ('-' reads stdin)")
    lint.add_argument("--json", action="store_true", help="print the findings as JSON")
    lint.add_argument("--strict", action="store_true", help="warnings fail too (exit 1)")
    lint.add_argument(
        "--no-schema", action="store_true", help="skip libvirt's schema check (virt-xml-validate)"
    )
    lint.set_defaults(handler=_lint)


def _read(path: str, what: str) -> bytes:
    try:
        if path == "-":
            data = sys.stdin.buffer.read(_MAX_INPUT + 1)
        else:
            with open(path, "rb") as fh:
                data = fh.read(_MAX_INPUT + 1)
    except OSError as err:
        raise SevboxError(f"cannot read {what} {path}: {err.strerror or err}") from None
    if len(data) > _MAX_INPUT:
        raise SevboxError(f"{what} {path} is larger than {_MAX_INPUT} bytes")
    return data


def _blob(path: str, what: str) -> str:
    """A blob file as base64 text: base64 files are kept, binary ones encoded."""
    data = _read(path, what)
    try:
        text = data.decode("ascii")
        base64.b64decode("".join(text.split()), validate=True)
    except (UnicodeDecodeError, binascii.Error, ValueError):
        return base64.b64encode(data).decode()
    return "".join(text.split())


def _policy(text: str | None, mode: str) -> int | None:
    if text is None:
        return None
    try:
        return int(text, 0)
    except ValueError:
        pass
    from sevbox.sev.policy import SevPolicy, SnpPolicy

    names = [n for n in text.replace("+", ",").split(",") if n.strip()]
    if not names:
        raise UsageError(f"--policy: {text!r} is neither a number nor flag names")
    if mode == "sev-snp":
        return SnpPolicy.from_names(names).encode() | (1 << 17)
    return SevPolicy.from_names(names).encode()


def _host_sev_params() -> tuple[int, int] | None:
    try:
        from sevbox.host.probe import sev_params
    except ImportError:
        return None
    try:
        return sev_params()
    except (OSError, ValueError):
        return None


def _xml(args: argparse.Namespace) -> int:
    from sevbox.libvirt.domain import DEFAULT_CBITPOS, DEFAULT_REDUCED_PHYS_BITS, DomainSpec, domain_xml

    mode = args.launch_security
    if (args.dh_cert is None) != (args.session is None):
        raise UsageError("an attested launch needs both --dh-cert and --session")
    hard_limit: int | None = None
    if not args.locked_memory and args.hard_limit != "auto":
        try:
            hard_limit = int(args.hard_limit, 10)
        except ValueError:
            raise UsageError(f"--hard-limit is 'auto' or a number of KiB, not {args.hard_limit!r}") from None
    cbitpos, rpb = args.cbitpos, args.reduced_phys_bits
    note = "cbitpos/reducedPhysBits from the command line"
    if cbitpos is None or rpb is None:
        host = _host_sev_params()
        if host is not None:
            cbitpos = host[0] if cbitpos is None else cbitpos
            rpb = host[1] if rpb is None else rpb
            note = "cbitpos/reducedPhysBits from this host (CPUID 0x8000001F)"
        else:
            cbitpos = DEFAULT_CBITPOS if cbitpos is None else cbitpos
            rpb = DEFAULT_REDUCED_PHYS_BITS if rpb is None else rpb
            note = "no SEV on this host: default cbitpos 51/reducedPhysBits 1 (check the target host)"
    spec = DomainSpec(
        name=args.name,
        memory_mib=args.memory,
        vcpus=args.vcpus,
        disk=str(Path(args.disk).absolute()),
        launch_security=mode,
        network=args.network,
        firmware=str(Path(args.firmware).absolute()) if args.firmware else None,
        nvram_template=str(Path(args.nvram_template).absolute()) if args.nvram_template else None,
        policy=_policy(args.policy, mode),
        dh_cert=_blob(args.dh_cert, "--dh-cert") if args.dh_cert else None,
        session=_blob(args.session, "--session") if args.session else None,
        kernel=str(Path(args.kernel).absolute()) if args.kernel else None,
        initrd=str(Path(args.initrd).absolute()) if args.initrd else None,
        cmdline=args.cmdline,
        locked_memory=args.locked_memory,
        hard_limit_kib=hard_limit,
        cbitpos=cbitpos,
        reduced_phys_bits=rpb,
        note=note,
    )
    text = domain_xml(spec)
    if mode == "sev-snp" and not args.firmware:
        print(
            "sevbox: warning: no --firmware: using /usr/share/ovmf/OVMF.fd, whose QEMU firmware "
            "descriptor (Debian) does not declare SNP support; pass an SNP-capable OVMF build",
            file=sys.stderr,
        )
    if args.output:
        try:
            Path(args.output).write_text(text)
        except OSError as err:
            raise SevboxError(f"cannot write {args.output}: {err.strerror or err}") from None
    else:
        sys.stdout.write(text)
    return 0


def _lint(args: argparse.Namespace) -> int:
    from sevbox.libvirt.lint import lint_domain, schema_check, schema_finding

    data = _read(args.file, "domain XML")
    findings = lint_domain(data)
    schema: dict[str, Any] = {"checked": False, "ok": True, "output": "", "note": "skipped (--no-schema)"}
    if not args.no_schema:
        result = schema_check(data)
        schema = result.to_json()
        extra = schema_finding(result)
        if extra is not None:
            findings.append(extra)
    errors = sum(1 for f in findings if f.severity == "error")
    warnings = len(findings) - errors
    failed = errors > 0 or (args.strict and warnings > 0)
    if args.json:
        doc = {
            "file": args.file,
            "ok": not failed,
            "errors": errors,
            "warnings": warnings,
            "findings": [f.to_json() for f in findings],
            "schema": schema,
        }
        print(json.dumps(doc, indent=2))
    else:
        print(f"{args.file}: {errors} error(s), {warnings} warning(s)")
        for f in findings:
            print(f"  {f.severity:<8}{f.rule:<21}{f.path}: {f.message}")
            print(f"  {'':<29}fix: {f.fix}")
        if schema["checked"]:
            state = "accepts" if schema["ok"] else "rejects"
            print(f"schema: libvirt's schema (virt-xml-validate) {state} the document")
        if schema["note"]:
            print(f"schema: {schema['note']}")
    return 1 if failed else 0
