"""``sevbox attest measure | validate | id-block``: expected launch digests, measurement checks, ID blocks.

Thin verbs: read files (the edge), call :mod:`sevbox.sev.measure` / :mod:`sevbox.sev.idblock`, print.
Option names are those of sev-snp-measure, virt-qemu-sev-validate and snp-create-id-block.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sevbox.errors import FormatError, SevboxError, UsageError, ValidateExit, VerificationError

if TYPE_CHECKING:
    from sevbox.sev.hashes import KernelHashes

from sevbox.cli.common import int0, read_bytes

__all__ = ["configure"]


def _sha256_file(path: str, option: str) -> bytes:
    from sevbox.files import sha256_file

    try:
        return sha256_file(path)
    except OSError as err:
        raise UsageError(f"cannot read {option} {path}: {err.strerror or err}") from None


def _kernel_hashes(
    kernel: str, initrd: str | None, append: str | None, opts: tuple[str, str]
) -> KernelHashes:
    import hashlib

    from sevbox.sev.hashes import KernelHashes, cmdline_bytes

    return KernelHashes(
        kernel=_sha256_file(kernel, opts[0]),
        initrd=_sha256_file(initrd, opts[1]) if initrd else hashlib.sha256(b"").digest(),
        cmdline=hashlib.sha256(cmdline_bytes(append)).digest(),
    )


# --- measure ---------------------------------------------------------------------------------

_MEASURE_DESC = """\
Compute the launch digest a guest will report, from the firmware, kernel, initrd, command line and
vCPUs it is launched with: SEV and SEV-ES (32 bytes, GCTX.LD) or SEV-SNP (48 bytes, MEASUREMENT in
the attestation report). Same options and output as sev-snp-measure.

  sevbox attest measure --mode snp --vcpus 4 --vcpu-type EPYC-Milan --ovmf OVMF.fd \\
      --kernel vmlinuz --initrd initrd.img --append 'console=ttyS0'
  sevbox attest measure --mode seves --vcpus 2 --vcpu-sig 0xa00f11 --ovmf OVMF.fd --output-format base64
  sevbox attest measure --mode snp:ovmf-hash --ovmf OVMF.fd        # seed for --snp-ovmf-hash

A kernel can only be measured with an OVMF built with a kernel hashes table (OvmfPkg/AmdSev); other
builds are refused. VMSAs (SEV-ES, SNP) are built as current KVM/QEMU set them (MXCSR 0x1f80,
x87 FCW 0x37f); --vmsa-fpu legacy gives the older layout (zeros) that older host kernels used.
"""


def _configure_measure(parser: argparse.ArgumentParser) -> None:
    from sevbox.sev.vmsa import CPU_SIGS

    a = parser.add_argument
    a("--mode", required=True, choices=("sev", "seves", "snp", "snp:ovmf-hash"), help="guest mode")
    a("--ovmf", required=True, metavar="PATH", help="the OVMF firmware image the guest boots")
    a("--kernel", metavar="PATH", help="kernel given to QEMU with -kernel (kernel-hashes=on)")
    a("--initrd", metavar="PATH", help="initrd given with -initrd (needs --kernel)")
    a("--append", metavar="CMDLINE", help="kernel command line given with -append (needs --kernel)")
    a("--vcpus", metavar="N", type=int, help="number of vCPUs (seves, snp)")
    a("--vcpu-type", metavar="CPUTYPE", choices=list(CPU_SIGS), help=f"QEMU CPU model: {', '.join(CPU_SIGS)}")
    a("--vcpu-sig", metavar="VALUE", type=int0, help="vCPU signature (CPUID 1 EAX), e.g. 0xa00f11")
    a("--vcpu-family", metavar="FAMILY", type=int, help="vCPU family (with --vcpu-model, --vcpu-stepping)")
    a("--vcpu-model", metavar="MODEL", type=int, help="vCPU model")
    a("--vcpu-stepping", metavar="STEPPING", type=int, help="vCPU stepping")
    a("--vmm-type", metavar="VMMTYPE", default="QEMU", help="VMM that launches the guest: QEMU, ec2, gce")
    a(
        "--guest-features",
        metavar="VALUE",
        type=int0,
        default=0x1,
        help="SNP SEV_FEATURES in the VMSAs (default 0x1; 0x21 adds DebugSwap)",
    )
    a("--snp-ovmf-hash", metavar="HASH", help="precomputed OVMF hash (hex, from --mode snp:ovmf-hash)")
    a("--output-format", choices=("hex", "base64"), default="hex", help="digest output format")
    a("--dump-vmsa", action="store_true", help="write the measured VMSAs to vmsa<N>.bin (seves, snp)")
    a(
        "--vmsa-fpu",
        choices=("current", "legacy"),
        default="current",
        help="VMSA FPU init: current (MXCSR/FCW set, default) or legacy (zeros, older host kernels)",
    )
    a("-v", "--verbose", action="store_true", help="say which mode the digest is for")
    a("--json", action="store_true", help="print a JSON object with the digest and the inputs")
    parser.set_defaults(handler=_measure)


def _vcpu_sig(args: argparse.Namespace, qemu: bool) -> int:
    from sevbox.sev.vmsa import CPU_SIGS, cpu_sig

    fms = (args.vcpu_family, args.vcpu_model, args.vcpu_stepping)
    if any(v is not None for v in fms):
        if any(v is None for v in fms):
            raise UsageError("--vcpu-family needs --vcpu-model and --vcpu-stepping")
        try:
            return cpu_sig(*fms)
        except ValueError as err:
            raise UsageError(str(err)) from None
    if args.vcpu_sig is not None:
        if not 0 <= args.vcpu_sig < 1 << 32:
            raise UsageError("--vcpu-sig must be a 32-bit value")
        return int(args.vcpu_sig)
    if args.vcpu_type is not None:
        return CPU_SIGS[args.vcpu_type]
    if qemu:
        raise UsageError(f"missing --vcpu-type or --vcpu-sig or --vcpu-family in guest mode '{args.mode}'")
    return 0  # EC2 and GCE put a fixed value in RDX


def _measure(args: argparse.Namespace) -> int:
    from sevbox.sev import measure as M
    from sevbox.sev.ovmf import parse_ovmf
    from sevbox.sev.vmsa import FpuInit, VmmType, VmsaState

    ovmf = parse_ovmf(read_bytes(args.ovmf, "--ovmf"))
    mode = M.Mode(args.mode)
    pages: list[bytes] = []
    if mode is M.Mode.SNP_OVMF_HASH:
        digest = M.snp_ovmf_hash(ovmf)
        return _print_measure(args, mode, digest, hex_only=True)
    if args.initrd and not args.kernel:
        raise UsageError("--kernel required when using --initrd")
    if args.append and not args.kernel:
        raise UsageError("--kernel required when using --append")
    if args.snp_ovmf_hash and mode is not M.Mode.SNP:
        raise UsageError("--snp-ovmf-hash only works with --mode snp")
    if args.dump_vmsa and mode is M.Mode.SEV:
        raise UsageError("--dump-vmsa is only available in modes seves and snp")
    if mode is not M.Mode.SEV:
        if args.vcpus is None:
            raise UsageError(f"missing --vcpus N in guest mode '{args.mode}'")
        if not 1 <= args.vcpus <= 512:
            raise UsageError("--vcpus must be 1..512")
    try:
        vmm = VmmType.parse(args.vmm_type)
    except ValueError:
        raise UsageError(f"unknown VMM type '{args.vmm_type}' (QEMU, ec2 or gce)") from None
    fpu = FpuInit(args.vmsa_fpu)
    kh = (
        _kernel_hashes(args.kernel, args.initrd, args.append, ("--kernel", "--initrd"))
        if args.kernel
        else None
    )

    if mode is M.Mode.SEV:
        digest = M.sev_digest(ovmf=ovmf, kernel_hashes=kh)
    elif mode is M.Mode.SEV_ES:
        sig = _vcpu_sig(args, vmm is VmmType.QEMU)
        state = VmsaState(vcpu_sig=sig, sev_features=0, vmm_type=vmm, fpu=fpu)
        pages = M.sev_measured_vmsas(ovmf=ovmf, vcpus=args.vcpus, state=state)
        digest = M.seves_digest(ovmf=ovmf, vcpus=args.vcpus, vcpu_sig=sig, kernel_hashes=kh, vmsas=pages)
    else:
        sig = _vcpu_sig(args, vmm is VmmType.QEMU)
        seed = None
        if args.snp_ovmf_hash:
            try:
                seed = bytes.fromhex(args.snp_ovmf_hash)
            except ValueError:
                raise UsageError("--snp-ovmf-hash must be hex") from None
            if len(seed) != 48:
                raise UsageError("--snp-ovmf-hash must be 48 bytes (96 hex digits)")
        digest, pages = M.snp_digest(
            ovmf=ovmf,
            vcpus=args.vcpus,
            vcpu_sig=sig,
            guest_features=args.guest_features,
            kernel_hashes=kh,
            vmm_type=vmm,
            ovmf_hash=seed,
            fpu=fpu,
        )
    if args.dump_vmsa:
        for i, page in enumerate(pages):
            Path(f"vmsa{i}.bin").write_bytes(page)
    return _print_measure(args, mode, digest)


_MODE_NAMES = {"sev": "SEV", "seves": "SEV_ES", "snp": "SEV_SNP", "snp:ovmf-hash": "SEV_SNP"}


def _print_measure(args: argparse.Namespace, mode: Any, digest: bytes, *, hex_only: bool = False) -> int:
    text = digest.hex() if hex_only or args.output_format == "hex" else base64.b64encode(digest).decode()
    if args.json:
        out = {
            "mode": mode.value,
            "measurement": digest.hex(),
            "measurement_base64": base64.b64encode(digest).decode(),
            "ovmf": args.ovmf,
            "kernel": args.kernel,
            "initrd": args.initrd,
            "append": args.append,
            "vcpus": args.vcpus,
            "vmm_type": args.vmm_type,
            "guest_features": args.guest_features if mode.value == "snp" else None,
            "vmsa_fpu": args.vmsa_fpu if mode.value in ("seves", "snp") else None,
        }
        print(json.dumps(out, indent=2))
    elif args.verbose and not hex_only:
        print(f"Calculated {_MODE_NAMES[mode.value]} guest measurement: {text}")
    else:
        print(text)
    return 0


# --- validate --------------------------------------------------------------------------------

_VALIDATE_DESC = """\
Check a launch measurement reported by an SEV or SEV-ES guest (QEMU query-sev-launch-measure,
libvirt domlaunchsecinfo) against the one expected for the firmware, kernel, initrd, command line
and vCPUs you meant to launch, keyed by the TIK of the launch session. Same options and exit codes
as libvirt's virt-qemu-sev-validate (offline mode): 0 ok, 1 attestation failed, 2 unsupported
usage, 3 insecure, 4 bad config, 5 bad state, 6 other error. The comparison is constant-time.

  sevbox attest validate --measurement $(cat measure.b64) --api-major 1 --api-minor 49 \\
      --build-id 6 --policy 0x05 --firmware OVMF.fd --kernel vmlinuz --initrd initrd.img \\
      --cmdline 'console=ttyS0' --num-cpus 4 --cpu-family 25 --cpu-model 1 --cpu-stepping 1 \\
      --tk session_tk.bin

SEV-ES (policy bit 2) needs --num-cpus and either --vmsa-cpu0/--vmsa-cpu1 files or the host's CPU
family/model/stepping to build them. Built VMSAs default to the legacy FPU init (MXCSR and x87
FCW zero), as virt-qemu-sev-validate and sevctl build them; hosts whose kernel sets them (what
'sevbox attest measure' assumes) need --vmsa-fpu current.
"""


def _configure_validate(parser: argparse.ArgumentParser) -> None:
    state = parser.add_argument_group("virtual machine launch state")
    state.add_argument(
        "--measurement", "-m", metavar="B64", help="the reported measurement (base64 of MEASURE || MNONCE)"
    )
    state.add_argument("--api-major", type=int0, metavar="N", help="SEV API major version of the launch")
    state.add_argument("--api-minor", type=int0, metavar="N", help="SEV API minor version")
    state.add_argument("--build-id", type=int0, metavar="N", help="SEV firmware build ID")
    state.add_argument(
        "--policy", type=int0, metavar="VALUE", help="the guest's SEV policy (e.g. 0x05 for SEV-ES)"
    )
    cfg = parser.add_argument_group("virtual machine config")
    cfg.add_argument("--firmware", "-f", metavar="PATH", help="path to the firmware (OVMF) image")
    cfg.add_argument("--kernel", "-k", metavar="PATH", help="path to the kernel (QEMU -kernel)")
    cfg.add_argument("--initrd", "-r", metavar="PATH", help="path to the initrd (needs --kernel)")
    cfg.add_argument("--cmdline", "-e", metavar="CMDLINE", help="kernel command line (needs --kernel)")
    cfg.add_argument("--num-cpus", "-n", type=int, metavar="N", help="number of vCPUs (SEV-ES)")
    cfg.add_argument("--vmsa-cpu0", "-0", metavar="PATH", help="VMSA of the boot vCPU (4096-byte file)")
    cfg.add_argument("--vmsa-cpu1", "-1", metavar="PATH", help="VMSA of the other vCPUs (4096-byte file)")
    cfg.add_argument("--cpu-family", type=int, metavar="N", help="host CPU family (to build the VMSAs)")
    cfg.add_argument("--cpu-model", type=int, metavar="N", help="host CPU model")
    cfg.add_argument("--cpu-stepping", type=int, metavar="N", help="host CPU stepping")
    cfg.add_argument(
        "--vmsa-fpu",
        choices=("current", "legacy"),
        default="legacy",
        help="FPU init of built VMSAs: legacy (zeros, as virt-qemu-sev-validate; default) or current "
        "(MXCSR 0x1f80, FCW 0x37f, as newer host kernels and 'attest measure')",
    )
    cfg.add_argument("--tik", metavar="PATH", help="TIK file of the launch session (16 bytes)")
    cfg.add_argument("--tek", metavar="PATH", help="TEK file of the launch session (16 bytes)")
    cfg.add_argument("--tk", metavar="PATH", help="TEK||TIK combined file (32 bytes), instead of --tik/--tek")
    other = parser.add_argument_group(
        "virt-qemu-sev-validate options refused here (exit 2, with what to use instead)"
    )
    other.add_argument("--domain", "-o", metavar="NAME", help="libvirt mode: not supported (give the state)")
    other.add_argument("--connect", "-c", metavar="URI", help=argparse.SUPPRESS)
    other.add_argument("--insecure", "-i", action="store_true", help=argparse.SUPPRESS)
    other.add_argument("--ignore-config", "-g", action="store_true", help=argparse.SUPPRESS)
    other.add_argument(
        "--inject-secret", "-s", action="append", default=[], metavar="GUID:PATH",
        help="secret injection: use 'sevbox attest secret'",
    )  # fmt: skip
    other.add_argument("--secret-payload", metavar="PATH", help=argparse.SUPPRESS)
    other.add_argument("--secret-header", metavar="PATH", help=argparse.SUPPRESS)
    parser.add_argument("--quiet", "-q", action="store_true", help="print nothing; the exit code says")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(handler=_validate)


class _Exit(Exception):
    def __init__(self, code: ValidateExit, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _unsupported(message: str) -> _Exit:
    return _Exit(ValidateExit.UNSUPPORTED, message)


def _check_usage(args: argparse.Namespace) -> None:
    if args.domain is not None or args.connect is not None or args.insecure or args.ignore_config:
        raise _unsupported(
            "libvirt mode (--domain/--connect) is not supported: give the launch state instead "
            "(--measurement, --api-major, --api-minor, --build-id, --policy; 'virsh domlaunchsecinfo')"
        )
    if args.inject_secret or args.secret_payload is not None or args.secret_header is not None:
        raise _unsupported("secret injection is done by 'sevbox attest secret' (after validation)")
    if args.tk is not None:
        if args.tik is not None or args.tek is not None:
            raise _unsupported("--tk is mutually exclusive with --tek/--tik")
    elif args.tik is None or args.tek is None:
        raise _unsupported("Either --tk or both of --tek/--tik are required")
    for opt in ("measurement", "api_major", "api_minor", "build_id", "policy", "firmware"):
        if getattr(args, opt) is None:
            raise _unsupported(f"--{opt.replace('_', '-')} is required")
    if args.kernel is None and (args.initrd is not None or args.cmdline is not None):
        raise _unsupported("--initrd/--cmdline require --kernel")
    sku = (args.cpu_family, args.cpu_model, args.cpu_stepping)
    if all(v is None for v in sku):
        if args.vmsa_cpu1 is not None and args.vmsa_cpu0 is None:
            raise _unsupported("VMSA for additional CPU also requires VMSA for boot CPU")
    else:
        if args.vmsa_cpu0 is not None or args.vmsa_cpu1 is not None:
            raise _unsupported("VMSA files are mutually exclusive with CPU SKU")
        if any(v is None for v in sku):
            raise _unsupported("CPU SKU needs family, model and stepping for SEV-ES domain")


def _read_exact(path: str, option: str, size: int, what: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise _Exit(ValidateExit.OTHER, f"cannot read {option} {path}: {err.strerror or err}") from None
    if len(data) != size:
        raise _unsupported(f"Expected {size} bytes in {what} file, but got {len(data)}")
    return data


def _validate_core(args: argparse.Namespace) -> dict[str, Any]:
    from sevbox.sev import measure as M
    from sevbox.sev.hashes import build_table
    from sevbox.sev.ovmf import parse_ovmf
    from sevbox.sev.vmsa import FpuInit, VmsaState, cpu_sig

    _check_usage(args)
    if args.tk is not None:
        tk = _read_exact(args.tk, "--tk", 32, "TIK/TEK")
        tik = tk[16:]
    else:
        tik = _read_exact(args.tik, "--tik", 16, "TIK")
        _read_exact(args.tek, "--tek", 16, "TEK")
    try:
        info = M.SevLaunchInfo(
            api_major=args.api_major, api_minor=args.api_minor, build_id=args.build_id, policy=args.policy
        )
    except UsageError as err:
        raise _unsupported(err.message) from None
    try:
        blob = base64.b64decode(args.measurement, validate=True)
    except (binascii.Error, ValueError):
        raise _Exit(ValidateExit.OTHER, "--measurement is not base64") from None
    try:
        firmware = read_bytes(args.firmware, "--firmware")
        kh = None
        if args.kernel is not None:
            kh = _kernel_hashes(args.kernel, args.initrd, args.cmdline, ("--kernel", "--initrd"))
    except UsageError as err:
        raise _Exit(ValidateExit.OTHER, err.message) from None
    ovmf = parse_ovmf(firmware)
    vmsas: list[bytes] = []
    sev_es = bool(info.policy & 0x4)
    vmsa_source = None
    if sev_es:
        if args.num_cpus is None:
            raise _unsupported("Number of virtual CPUs must be specified for SEV-ES domain")
        if args.num_cpus < 1:
            raise _unsupported("Number of virtual CPUs must be at least 1")
        if args.cpu_family is not None:
            try:
                sig = cpu_sig(args.cpu_family, args.cpu_model, args.cpu_stepping)
            except ValueError as err:
                raise _unsupported(str(err)) from None
            state = VmsaState(vcpu_sig=sig, fpu=FpuInit(args.vmsa_fpu))
            vmsas = M.sev_measured_vmsas(ovmf=ovmf, vcpus=args.num_cpus, state=state)
            vmsa_source = (
                f"built for family {args.cpu_family} model {args.cpu_model} "
                f"stepping {args.cpu_stepping} ({args.vmsa_fpu} FPU init)"
            )
        else:
            if args.vmsa_cpu0 is None:
                raise _unsupported("VMSA for boot CPU required for SEV-ES domain")
            if args.num_cpus > 1 and args.vmsa_cpu1 is None:
                raise _unsupported("VMSA for additional CPUs required for SEV-ES domain with SMP")
            v0 = _read_exact(args.vmsa_cpu0, "--vmsa-cpu0", 4096, "VMSA")
            v1 = _read_exact(args.vmsa_cpu1, "--vmsa-cpu1", 4096, "VMSA") if args.num_cpus > 1 else b""
            vmsas = [v0] + [v1] * (args.num_cpus - 1)
            vmsa_source = "from --vmsa-cpu0/--vmsa-cpu1"
    # Computed as the firmware would measure it, even if this OVMF has no hashes table (then it
    # cannot match: QEMU refuses to launch that way); virt-qemu-sev-validate does the same.
    table = build_table(kh) if kh is not None else b""
    digest = M.sev_launch_digest(firmware=firmware, hashes_table=table, vmsas=vmsas)
    result: dict[str, Any] = {
        "sev_es": sev_es,
        "expected_digest": digest.hex(),
        "vmsas": vmsa_source,
    }
    if len(blob) != 48:
        raise _Exit(
            ValidateExit.ATTESTATION_FAILED,
            "Measurement does not match, VM is not trustworthy "
            f"(the measurement is {len(blob)} bytes, not 48)",
        )
    if not M.measurement_matches(tik=tik, info=info, digest=digest, blob=blob):
        hint = ""
        if kh is not None and not ovmf.has_sev_hashes_table:
            hint = " (note: this firmware has no kernel hashes table, so QEMU cannot have measured a kernel)"
        raise _Exit(
            ValidateExit.ATTESTATION_FAILED, "Measurement does not match, VM is not trustworthy" + hint
        )
    return result


def _validate(args: argparse.Namespace) -> int:
    result: dict[str, Any] = {}
    try:
        result = _validate_core(args)
        code, message = ValidateExit.OK, "OK: Looks good to me"
    except _Exit as e:
        code, message = e.code, e.message
    except SevboxError as e:
        code, message = ValidateExit.OTHER, str(e)
    if args.json:
        result.update({"ok": code == ValidateExit.OK, "exit_code": int(code), "message": message})
        print(json.dumps(result, indent=2))
    elif not args.quiet:
        if code == ValidateExit.OK:
            print(message)
        else:
            print(f"sevbox: {message}", file=sys.stderr)
    return int(code)


# --- id-block --------------------------------------------------------------------------------

_IDBLOCK_DESC = """\
Build an SEV-SNP ID block for a launch digest and sign it (ID auth) with your ID key and author key
(EC P-384 private keys, PEM). Output as snp-create-id-block prints it: the id-block= and id-auth=
values for QEMU's sev-snp-guest object, then the SHA-384 digests of the two public keys, which every
attestation report of the guest carries (ID_KEY_DIGEST, AUTHOR_KEY_DIGEST).

  sevbox attest id-block --measurement $(sevbox attest measure --mode snp ... --output-format base64) \\
      --idkey id_key.pem --authorkey author_key.pem

Make a key: openssl ecparam -name secp384r1 -genkey -noout -out id_key.pem
"""


def _hex16(text: str) -> bytes:
    try:
        value = bytes.fromhex(text.removeprefix("0x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not hex: {text!r}") from None
    if len(value) != 16:
        raise argparse.ArgumentTypeError("must be 16 bytes (32 hex digits)")
    return value


def _configure_id_block(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a("--measurement", metavar="VALUE", required=True, help="SNP launch digest, base64 (48 bytes)")
    a("--idkey", metavar="PATH", help="ID private key (P-384, PEM)")
    a("--authorkey", metavar="PATH", help="author private key (P-384, PEM)")
    a(
        "--policy",
        type=int0,
        default=0x30000,
        metavar="VALUE",
        help="SNP guest policy in the block (default 0x30000)",
    )
    a("--guest-svn", type=int0, default=0, metavar="N", help="guest security version number (default 0)")
    a(
        "--family-id",
        type=_hex16,
        default=bytes(16),
        metavar="HEX",
        help="family ID, 32 hex digits (default zeros)",
    )
    a(
        "--image-id",
        type=_hex16,
        default=bytes(16),
        metavar="HEX",
        help="image ID, 32 hex digits (default zeros)",
    )
    a("--json", action="store_true", help="print id_block, id_auth and the key digests as JSON (base64)")
    parser.set_defaults(handler=_id_block)


def _id_block(args: argparse.Namespace) -> int:
    from sevbox.sev import idblock as I

    if args.idkey is None or args.authorkey is None:
        raise UsageError("missing key files for id block (--idkey and --authorkey)")
    try:
        ld = base64.b64decode(args.measurement, validate=True)
    except (binascii.Error, ValueError):
        raise UsageError("--measurement must be base64") from None
    block = I.IdBlock(
        launch_digest=ld,
        family_id=args.family_id,
        image_id=args.image_id,
        guest_svn=args.guest_svn,
        policy=args.policy,
    )
    id_key = I.load_private_key(read_bytes(args.idkey, "--idkey"), name=args.idkey)
    author = I.load_private_key(read_bytes(args.authorkey, "--authorkey"), name=args.authorkey)
    signed = I.sign_id_block(block=block, id_key=id_key, author_key=author)
    try:
        I.verify_id_auth(signed.id_block, signed.id_auth)
    except (VerificationError, FormatError) as err:  # never hand out a block that would not verify
        raise SevboxError(f"internal check of the signed ID block failed: {err}") from None
    if args.json:
        b64 = base64.b64encode
        out = {
            "id_block": b64(signed.id_block).decode(),
            "id_auth": b64(signed.id_auth).decode(),
            "id_key_digest": b64(signed.id_key_digest).decode(),
            "author_key_digest": b64(signed.author_key_digest or b"").decode(),
        }
        print(json.dumps(out, indent=2))
    else:
        print(signed.qemu_text())
    return 0


def configure(verb: str, parser: argparse.ArgumentParser) -> None:
    if verb == "measure":
        parser.description = _MEASURE_DESC
        _configure_measure(parser)
    elif verb == "validate":
        parser.description = _VALIDATE_DESC
        _configure_validate(parser)
    elif verb == "id-block":
        parser.description = _IDBLOCK_DESC
        _configure_id_block(parser)
    else:  # pragma: no cover - the dispatcher only routes the three above
        raise ValueError(verb)
