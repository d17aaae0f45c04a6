"""``sevbox check`` (host readiness) and ``sevbox guest-check`` (is this machine's memory encrypted)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sevbox.errors import UsageError

__all__ = ["configure"]

_CHECK_DESCRIPTION = """\
Is this host ready to run VMs, and SEV, SEV-ES and SEV-SNP guests? Each item says what was
found and, when it is not good, how to fix it: CPU (CPUID 0x8000001F, or /proc/cpuinfo flags),
kernel command line (mem_encrypt, kvm_amd.sev*), kvm_amd parameters, /dev/sev (PLATFORM_STATUS),
/dev/kvm, QEMU (version, sev-guest/sev-snp-guest, query-sev-capabilities), OVMF builds (SEV
hashes table, SNP metadata), libvirt (domcapabilities), and sevbox's guest swiotlb size.

Which items each mode needs:
  vm        qemu.version (under KVM when kvm.usable, else TCG)
  sev       vm + kvm.usable cpu.sev kvm.sev dev.sev qemu.sev-guest firmware.ovmf guest.swiotlb
  sev-es    sev + cpu.sev-es kvm.sev-es (and QEMU >= 6.0)
  sev-snp   vm + kvm.usable cpu.sev-snp kvm.sev-snp dev.sev qemu.sev-snp-guest firmware.ovmf
            guest.swiotlb (and QEMU >= 9.1)
kernel.mem_encrypt (host SME) and libvirt.sev are reported but needed by no mode.

exit status:
  0  the CPU offers SEV (or SEV-ES, SEV-SNP) and the strongest mode it offers is ready
  1  otherwise: something the CPU offers is not set up, or the CPU has no SEV at all (plain VMs
     may still be ready: see "ready.vm"); with --require MODE: 0 exactly when MODE is ready

examples:
  sevbox check
  sevbox check --json | jq '.ready'
  sevbox check --require vm            # scripts: can this host run (unencrypted) VMs?
  sevbox check --capture /tmp/hostcopy # copy what the check reads (send it to someone)
  sevbox check --sysroot /tmp/hostcopy # diagnose that copy
"""

_GUEST_DESCRIPTION = """\
Run inside a Linux guest: is its memory encrypted? Reads MSR 0xC0010131 (SEV_STATUS) through
/dev/cpu/0/msr (loading the msr driver if needed) and decodes every bit (SEV, SEV-ES, SEV-SNP,
vTOM, ReflectVC, restricted/alternate injection, DebugSwap, SecureTSC, ...); shows the kernel's own
"Memory Encryption Features active" line and the guest-side SEV interfaces it finds. Where nothing
proves encryption, it says "not encrypted" plainly.

exit status: 0 memory encryption is active; 1 it is not (or cannot be shown to be).

examples:
  sevbox guest-check
  sevbox guest-check --json
"""


def configure(verb: str, parser: argparse.ArgumentParser) -> None:
    parser.description = _CHECK_DESCRIPTION if verb == "check" else _GUEST_DESCRIPTION
    parser.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    if verb == "check":
        parser.add_argument(
            "--sysroot",
            metavar="DIR",
            default="/",
            help="read /proc, /sys, /dev and /usr/share firmware under DIR (a captured tree); runs no"
            " program: QEMU/libvirt answers come from DIR/sevbox-capture/ (default /)",
        )
        parser.add_argument(
            "--require",
            metavar="MODE",
            choices=("vm", "sev", "sev-es", "sev-snp"),
            help="exit 0 exactly when MODE (vm, sev, sev-es, sev-snp) is ready",
        )
        parser.add_argument(
            "--capture",
            metavar="DIR",
            help="instead of checking, copy what the check reads (cpuinfo, cmdline, kvm_amd parameters,"
            " SEV kernel messages, CPUID, OVMF tails, QEMU/libvirt answers) into the new directory DIR,"
            " to diagnose elsewhere with --sysroot DIR",
        )
        parser.add_argument(
            "--quick",
            action="store_true",
            help="skip the slower probes (starting QEMU for query-sev-capabilities, asking libvirt)",
        )
        parser.set_defaults(handler=_check)
    else:
        parser.set_defaults(handler=_guest_check)


def _check(args: argparse.Namespace) -> int:
    from sevbox.config import load_config
    from sevbox.host.probe import MODES, REQUIRED, probe

    if args.capture:
        from sevbox.host.capture import capture

        written = capture(Path(args.capture), run_programs=not args.quick)
        print(f"wrote {len(written)} files to {args.capture}")
        print(f"diagnose with: sevbox check --sysroot {args.capture}")
        return 0
    sysroot = Path(args.sysroot)
    if not sysroot.is_dir():
        raise UsageError(f"--sysroot {args.sysroot}: not a directory")
    config = load_config(args.config)
    report = probe(
        sysroot,
        run_qemu=not args.quick,
        run_libvirt=not args.quick,
        ovmf=config.ovmf,
        swiotlb_mib=config.swiotlb_mib,
        memory_mib=config.memory_mib,
    )
    code = report.exit_code if args.require is None else (0 if report.ready[args.require] else 1)
    if args.json:
        json.dump(report.to_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return code
    needed = {i for ids in REQUIRED.values() for i in ids}
    out = []
    for c in report.checks:
        tag = "[ ok ]" if c.ok else ("[FAIL]" if c.id in needed else "[ -- ]")
        out.append(f"{tag} {c.id:<19}{c.detail}")
        if not c.ok and c.fix:
            out.append(f"{'':<7}{'':<19}fix: {c.fix}")
    out.append("")
    out.append("ready: " + ", ".join(f"{m} {'yes' if report.ready[m] else 'no'}" for m in MODES))
    why = report.why
    for m in MODES:
        if m in why:
            out.append(f"  {m} is not ready: {why[m]}")
    if report.cpu_offers == "vm":
        out.append("this CPU offers no SEV: guests here can only run unencrypted")
    else:
        state = "ready" if report.ready[report.cpu_offers] else "NOT ready"
        out.append(f"the strongest mode this CPU offers is {report.cpu_offers}: {state}")
    print("\n".join(out))
    return code


def _guest_check(args: argparse.Namespace) -> int:
    from sevbox.host.guestcheck import guest_check

    report = guest_check()
    code = 0 if report.encrypted else 1
    if args.json:
        json.dump(report.to_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return code
    head, _, rest = report.summary.partition(":")
    out = [f"{head.upper() if not report.encrypted else head}:{rest}"]
    if report.status is not None:
        out.append(f"  {report.status.describe()}")
        for b in report.status.bits():
            if b["set"]:
                out.append(f"    bit {b['bit']:>2} {b['name']:<13}{b['meaning']}")
    else:
        out.append(f"  SEV_STATUS MSR: {report.msr.error}")
    if report.kernel_lines:
        out.append(f"  kernel ({report.kernel_source}):")
        out += [f"    {ln}" for ln in report.kernel_lines]
    else:
        out.append(f"  kernel: no memory-encryption message ({report.kernel_source})")
    present = [k for k, v in report.interfaces.items() if v]
    out.append(f"  SEV guest interfaces: {', '.join(present) if present else 'none'}")
    print("\n".join(out))
    return code
