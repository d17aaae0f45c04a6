"""The SEV-shaped boot path, once: q35 + OVMF (UEFI) + the bzImage, every virtio device with
iommu_platform=on, disable-legacy=on and no option ROM. Slow under TCG (~8 s), so one boot."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sevbox.guest.image import GuestImage
from sevbox.runtime.bundle import load_bundle
from sevbox.sandbox import Exited, Output, Sandbox

pytestmark = pytest.mark.vm

OVMF = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")


def test_q35_ovmf_bzimage_secure_devices(make_bundle: Callable[..., Path], guest_image: GuestImage) -> None:
    bundle = load_bundle(
        make_bundle(
            ["sh", "-c", "echo uefi-ok; cat /sys/firmware/efi/fw_platform_size"],
            mounts=[{"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["ro"]}],
        )
    )
    with Sandbox.launch(
        rootfs=bundle.rootfs, name="ovmf", machine="q35", firmware=OVMF, secure_devices=True, timeout=180
    ) as sb:
        argv = sb.machine.argv
        assert argv[argv.index("-kernel") + 1] == str(guest_image.bzimage)
        assert any(a.startswith("if=pflash") and str(OVMF) in a for a in argv)
        virtio = [a for a in argv if a.startswith("virtio-")]
        assert virtio and all("iommu_platform=on,disable-legacy=on,romfile=" in a for a in virtio)
        sb.create_container(bundle)
        sb.start_container()
        out = b""
        status = None
        deadline = time.monotonic() + 60
        while status is None:
            assert time.monotonic() < deadline
            for ev in sb.events():
                if isinstance(ev, Output):
                    out += ev.data
                elif isinstance(ev, Exited):
                    status = ev.status
            time.sleep(0.05)
        assert status == 0
        assert out == b"uefi-ok\n64\n"  # booted by UEFI firmware, not SeaBIOS/PVH
        sb.shutdown()
