"""``sevbox attest expected | measurement | inject``: the owner's view of what the runtime launches.

Thin verbs: ``expected`` asks :mod:`sevbox.runtime.expected` (fed by the functions that build the
argv); ``measurement`` and ``inject`` talk to a container's QEMU through its monitor (op ``qmp``) and
parse with :mod:`sevbox.qemu.sevqmp`.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sevbox.errors import ContainerError, HostError, UsageError, VmError

if TYPE_CHECKING:
    from sevbox.config import Config
    from sevbox.launch import LaunchPlan
    from sevbox.runtime.container import Container

__all__ = ["configure"]

_MODES = ("sev", "sev-es", "sev-snp")

# --- expected --------------------------------------------------------------------------------

_EXPECTED_DESC = """\
Print the launch digest a guest owner should expect for exactly what the runtime would launch for a
bundle (or a created container): the same OVMF firmware, bzImage, initrd, kernel command line, vCPU
count, vCPU model and policy that go into QEMU's argv, measured as the AMD secure processor does
(SEV and SEV-ES: 32-byte GCTX.LD; SEV-SNP: the 48-byte MEASUREMENT of the attestation report).

  sevbox attest expected --bundle ./mybundle --mode sev-es
  sevbox attest expected --bundle ./mybundle --mode sev-snp --ovmf /opt/amdsev/OVMF.fd --json
  sevbox attest expected mycontainer

The mode comes from --mode, else the container's recorded launch security, else the config and the
bundle's sevbox.launch-security annotation (auto asks this host). The other values come from the
sevbox config (--config) and the bundle's annotations. The kernel, initrd and command line are only
measured with an OVMF built with a kernel hashes table (OvmfPkg/AmdSev); Debian's OVMF has none and
is refused: give an AmdSev build with --ovmf.

SEV-ES and SNP VMSAs are built for the runtime's fixed vCPU model (EPYC-v4) as current host kernels
set them (MXCSR and x87 FCW initialised; SNP SEV_FEATURES 0x1). To check an SEV-ES measurement with
'sevbox attest validate', give it --cpu-family 23 --cpu-model 1 --cpu-stepping 2 --vmsa-fpu current.
"""


def _configure_expected(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a("id", nargs="?", metavar="ID", help="a created container (reads its bundle and recorded annotations)")
    a("--bundle", "-b", metavar="DIR", help="an OCI bundle (config.json) the runtime would create")
    a("--mode", choices=_MODES, help="the launch security to measure (default: what the runtime would use)")
    a("--ovmf", metavar="PATH", help="OVMF firmware to launch with (overrides 'ovmf' in the config)")
    a("--json", action="store_true", help="print the digest and every input as JSON")
    parser.set_defaults(handler=_expected)


def _mode_plan(args: argparse.Namespace, config: Config, recorded: Mapping[str, str]) -> LaunchPlan:
    from sevbox.launch import ENCRYPTED_MODES
    from sevbox.runtime.expected import what_if_plan
    from sevbox.runtime.vmplan import plan_launch

    if args.mode:
        return what_if_plan(args.mode, config)
    effective = recorded.get("sevbox.launch-security.effective")
    if effective in ENCRYPTED_MODES:
        return what_if_plan(str(effective), config)
    if effective is None and config.launch_security in ENCRYPTED_MODES:
        return what_if_plan(config.launch_security, config)
    if effective is None and config.launch_security == "auto":
        plan = plan_launch(config)
        if plan.encrypted:
            return plan
    raise UsageError(
        "this container would run (or runs) without memory encryption, so nothing is measured: "
        "give --mode sev|sev-es|sev-snp to see what an encrypted launch would measure"
    )


def _expected(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from sevbox.config import load_config
    from sevbox.guest.image import build_image
    from sevbox.runtime.bundle import load_bundle
    from sevbox.runtime.expected import SNP_GUEST_FEATURES, VMSA_FPU, compute, launch_inputs, no_hashes_table
    from sevbox.runtime.vmplan import find_ovmf
    from sevbox.sev.ovmf import parse_ovmf

    if (args.id is None) == (args.bundle is None):
        raise UsageError("give either a container ID or --bundle DIR")
    recorded: dict[str, str] = {}
    if args.id is not None:
        rec = _container(args, args.id).record()
        bundle_dir = str(rec.get("bundle", ""))
        recorded = {str(k): str(v) for k, v in (rec.get("annotations") or {}).items()}
    else:
        bundle_dir = args.bundle
    bundle = load_bundle(Path(bundle_dir))
    config = load_config(args.config).with_annotations({**bundle.annotations, **recorded})
    if args.ovmf:
        config = replace(config, ovmf=args.ovmf)
    plan = _mode_plan(args, config, recorded)
    firmware = find_ovmf(config)
    try:
        ovmf = parse_ovmf(firmware.read_bytes())
    except OSError as err:
        raise HostError(f"cannot read the firmware {firmware}: {err.strerror or err}") from None
    if not ovmf.has_sev_hashes_table:
        raise no_hashes_table(firmware)
    image = build_image()
    inputs = launch_inputs(
        plan, config, firmware=firmware, has_hashes_table=True, kernel=image.bzimage, initrd=image.initrd
    )
    exp = compute(inputs)
    if args.json:
        out = {
            "mode": inputs.mode,
            "measurement": exp.digest.hex(),
            "measurement_base64": base64.b64encode(exp.digest).decode(),
            "firmware": str(inputs.firmware),
            "firmware_sha256": exp.firmware_sha256.hex(),
            "kernel": str(inputs.kernel),
            "kernel_sha256": exp.kernel_sha256.hex(),
            "initrd": str(inputs.initrd),
            "initrd_sha256": exp.initrd_sha256.hex(),
            "cmdline": inputs.cmdline,
            "vcpus": inputs.vcpus,
            "vcpu_type": inputs.cpu,
            "policy": inputs.policy,
            "kernel_hashes": inputs.kernel_hashes,
            "vmsa_fpu": VMSA_FPU.value if inputs.mode != "sev" else None,
            "guest_features": SNP_GUEST_FEATURES if inputs.mode == "sev-snp" else None,
        }
        print(json.dumps(out, indent=2))
        return 0
    rows = [
        ("mode", inputs.mode),
        ("firmware", f"{inputs.firmware} (sha256 {exp.firmware_sha256.hex()})"),
        ("kernel", f"{inputs.kernel} (sha256 {exp.kernel_sha256.hex()})"),
        ("initrd", f"{inputs.initrd} (sha256 {exp.initrd_sha256.hex()})"),
        ("cmdline", inputs.cmdline),
        ("vcpus", str(inputs.vcpus)),
        ("vcpu type", inputs.cpu),
        ("policy", f"{inputs.policy:#x}"),
        ("measurement", exp.digest.hex()),
        ("measurement (base64)", base64.b64encode(exp.digest).decode()),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k + ':':<{width + 1}} {v}")
    return 0


# --- measurement / inject ------------------------------------------------------------------------


def _container(args: argparse.Namespace, cid: str) -> Container:
    from sevbox.runtime.container import Container
    from sevbox.runtime.store import Store

    return Container.load(Store(args.root), cid)


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "error"


def _executor(c: Container) -> Any:
    """An ``execute(command, arguments)`` for sevbox.qemu.sevqmp over the container's monitor."""

    def execute(command: str, arguments: Mapping[str, Any] | None) -> Any:
        try:
            reply = c.ask(
                {"op": "qmp", "command": command, "arguments": dict(arguments) if arguments else None}
            )
        except ContainerError as err:
            raise VmError(f"container {c.id}: {command}: {_first_line(err.message)}") from None
        return reply.get("return")

    return execute


def _not_sev(c: Container) -> HostError:
    effective = c.record().get("annotations", {}).get("sevbox.launch-security.effective", "unknown")
    return HostError(
        f"container {c.id}: its VM runs without SEV (QEMU: query-sev says not enabled; launch security "
        f"{effective}): there is no launch measurement and no secret can be injected"
    )


_MEASUREMENT_DESC = """\
Read a running container's SEV launch state from its QEMU (QMP query-sev and
query-sev-launch-measure, through the container's monitor): API version, firmware build ID, policy,
guest state and the launch measurement, printed as the options 'sevbox attest validate' takes.

  sevbox attest measurement mycontainer
  sevbox attest validate $(sevbox attest measurement mycontainer --validate-args) \\
      --firmware OVMF.fd --kernel vmlinuz --initrd initrd.img --cmdline '...' --tk tk.bin

The measurement exists only for SEV and SEV-ES guests (SNP guests are attested by a report from
inside the guest), and only while the launch is not finished.
"""


def _configure_measurement(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a("id", metavar="ID", help="the container")
    a("--json", action="store_true", help="print the launch state as JSON")
    a("--validate-args", action="store_true", help="print only the 'attest validate' options, one line")
    parser.set_defaults(handler=_measurement)


def _measurement(args: argparse.Namespace) -> int:
    from sevbox.qemu.sevqmp import query_sev, query_sev_launch_measure

    c = _container(args, args.id)
    execute = _executor(c)
    info = query_sev(execute)
    if not info.enabled:
        raise _not_sev(c)
    if info.sev_type == "sev-snp":
        raise HostError(
            f"container {args.id} is an SEV-SNP guest: it has no launch measurement to read from the host; "
            "attest it with a report from inside the guest ('sevbox attest report')"
        )
    blob = base64.b64encode(query_sev_launch_measure(execute)).decode()
    validate = [
        "--measurement", blob, "--api-major", str(info.api_major), "--api-minor", str(info.api_minor),
        "--build-id", str(info.build_id), "--policy", f"{info.policy:#x}",
    ]  # fmt: skip
    if args.json:
        out = {
            "api_major": info.api_major, "api_minor": info.api_minor, "build_id": info.build_id,
            "policy": info.policy, "state": info.state, "sev_type": info.sev_type, "handle": info.handle,
            "measurement": blob, "validate_args": validate,
        }  # fmt: skip
        print(json.dumps(out, indent=2))
    elif args.validate_args:
        print(" ".join(validate))
    else:
        print(f"api-major:   {info.api_major}")
        print(f"api-minor:   {info.api_minor}")
        print(f"build-id:    {info.build_id}")
        print(f"policy:      {info.policy:#x}")
        print(f"state:       {info.state}")
        print(f"measurement: {blob}")
        print(f"validate:    sevbox attest validate {' '.join(validate)} --firmware ... --tk ...")
    return 0


_INJECT_DESC = """\
Inject a launch secret (from 'sevbox attest secret') into a container's SEV or SEV-ES guest (QMP
sev-inject-launch-secret, through the container's monitor), then let a paused VM run (QMP cont).
Do this only after 'sevbox attest validate' accepted the measurement: the packet is bound to it.

  sevbox attest inject mycontainer --header hdr.bin --payload payload.bin
  sevbox attest inject mycontainer --header hdr.b64 --payload payload.b64 --base64
"""


def _int0(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 0 <= value < 1 << 64:
        raise argparse.ArgumentTypeError("must be a 64-bit guest physical address")
    return value


def _configure_inject(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a("id", metavar="ID", help="the container")
    a("--header", required=True, metavar="PATH", help="the secret packet header (52 bytes)")
    a("--payload", required=True, metavar="PATH", help="the encrypted secret table")
    a(
        "--base64",
        action="store_true",
        help="header and payload files hold base64 text (attest secret --base64)",
    )
    a("--gpa", type=_int0, metavar="N", help="guest physical address (default: the firmware's secret area)")
    a("--json", action="store_true", help="print what was done as JSON")
    parser.set_defaults(handler=_inject)


def _read_packet_part(path: str, option: str, b64: bool) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise UsageError(f"cannot read {option} {path}: {err.strerror or err}") from None
    if b64:
        try:
            data = base64.b64decode(data.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise UsageError(f"{option} {path} is not base64") from None
    return data


def _inject(args: argparse.Namespace) -> int:
    from sevbox.qemu.sevqmp import inject_launch_secret, query_sev

    header = _read_packet_part(args.header, "--header", args.base64)
    payload = _read_packet_part(args.payload, "--payload", args.base64)
    c = _container(args, args.id)
    execute = _executor(c)
    if not query_sev(execute).enabled:
        raise _not_sev(c)
    inject_launch_secret(execute, header=header, payload=payload, gpa=args.gpa)
    resumed = False
    try:  # a pre-launch container: the monitor lets the VM run, waits for the agent, makes the container
        c.ask({"op": "launch"})
        resumed = True
    except ContainerError as err:
        if "not waiting to be launched" not in str(err):
            raise
        status = execute("query-status", None)
        if isinstance(status, Mapping) and status.get("running") is False:
            execute("cont", None)
            resumed = True
    if args.json:
        print(json.dumps({"injected": True, "resumed": resumed}))
    else:
        print(f"injected the secret into {args.id}" + ("; resumed the paused VM" if resumed else ""))
    return 0


def configure(verb: str, parser: argparse.ArgumentParser) -> None:
    if verb == "expected":
        parser.description = _EXPECTED_DESC
        _configure_expected(parser)
    elif verb == "measurement":
        parser.description = _MEASUREMENT_DESC
        _configure_measurement(parser)
    elif verb == "inject":
        parser.description = _INJECT_DESC
        _configure_inject(parser)
    else:  # pragma: no cover - the dispatcher only routes the three above
        raise ValueError(verb)
