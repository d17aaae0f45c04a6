"""Each launch-security mode's argv, exactly as the runtime builds it, given to the real QEMU 10.

QEMU must accept every option and fail only where SEV hardware is needed: this host has /dev/kvm but
no SEV (no /dev/sev, KVM without SEV VM types), so the failure must be exactly that one.
"""

from __future__ import annotations

import re
import socket
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from sevbox.config import Config
from sevbox.guest.image import build_image
from sevbox.launch import HostAbilities, choose
from sevbox.qemu.argv import DeviceFlags, Share, VmSpec, build_argv
from sevbox.runtime.vmplan import sandbox_args

pytestmark = pytest.mark.peers

READY = HostAbilities(ready={"sev": True, "sev-es": True, "sev-snp": True}, why={}, cbitpos=51,
                      reduced_phys_bits=1)  # fmt: skip
SEV_HW_FAILURES = (
    "Failed to open /dev/sev",
    "cbitpos check failed",
    "vm-type SEV-SNP not supported by KVM",
)


def _argv(mode: str, tmp: Path, chan_fd: int, qmp_fd: int, cbitpos: int) -> list[str]:
    config = Config(launch_security=mode)
    plan = choose(config, replace(READY, cbitpos=cbitpos))
    args = sandbox_args(plan, config)
    image = build_image()
    spec = VmSpec(
        kernel=image.bzimage, initrd=image.initrd, machine=args["machine"], accel=args["accel"],
        memory_mib=args["memory_mib"], vcpus=args["vcpus"], firmware=args["firmware"],
        shares=(Share(path=tmp),), channel_fd=chan_fd, qmp_fd=qmp_fd,
        device_flags=DeviceFlags.secure() if args["secure_devices"] else DeviceFlags(),
    )  # fmt: skip
    return build_argv(replace(spec, **args["spec_overrides"]))


def _run(argv: list[str], fds: tuple[int, ...]) -> str:
    r = subprocess.run([*argv, "-S"], capture_output=True, text=True, timeout=60, pass_fds=fds, check=False)
    assert r.returncode != 0, "QEMU started an SEV guest on a host without SEV?"
    return r.stderr


@pytest.mark.parametrize("mode", ["sev", "sev-es", "sev-snp"])
def test_qemu_accepts_every_option_and_fails_only_for_sev_hardware(mode: str, tmp_path: Path) -> None:
    a, b = socket.socketpair()
    c, d = socket.socketpair()
    with a, b, c, d:
        fds = (b.fileno(), d.fileno())
        argv = _argv(mode, tmp_path, b.fileno(), d.fileno(), cbitpos=51)
        joined = " ".join(argv)
        assert "-machine q35,confidential-guest-support=sev0" in joined
        for dev in [argv[i + 1] for i, x in enumerate(argv) if x == "-device" and "virtio" in argv[i + 1]]:
            assert "iommu_platform=on" in dev and "disable-legacy=on" in dev and "romfile=" in dev, dev
        obj = next(argv[i + 1] for i, x in enumerate(argv) if x == "-object" and "sev" in argv[i + 1])
        assert obj.startswith("sev-snp-guest," if mode == "sev-snp" else "sev-guest,")
        policy = int(re.search(r"policy=(0x[0-9a-f]+)", obj).group(1), 16)  # type: ignore[union-attr]
        assert policy == {"sev": 0x1, "sev-es": 0x5, "sev-snp": 0x30000}[mode]
        assert ("-bios" in argv) == (mode == "sev-snp")  # SNP: -bios; SEV/SEV-ES: pflash
        assert "swiotlb=" in argv[argv.index("-append") + 1]
        err = _run(argv, fds)
        assert any(f in err for f in SEV_HW_FAILURES), err
        host = re.search(r"host '(\d+)'", err)
        if host:  # QEMU checked our C-bit against the host's first: match it and go one step further
            err = _run(_argv(mode, tmp_path, b.fileno(), d.fileno(), cbitpos=int(host.group(1))), fds)
        expected = "vm-type SEV-SNP not supported by KVM" if mode == "sev-snp" else "Failed to open /dev/sev"
        assert expected in err, err
        for bad in ("Property", "not found", "Invalid parameter", "invalid", "unknown"):
            assert bad not in err, err
