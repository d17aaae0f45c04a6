"""SEV_STATUS read in a real guest, the way guest-check reads it, and decoded by sevbox.

Boots the pinned Debian kernel under QEMU (TCG, -cpu EPYC: no SEV) with a busybox initramfs that
loads the kernel's own msr driver and reads 8 bytes at offset 0xC0010131 of /dev/cpu/0/msr. The
bytes come back over the serial console; sevbox.host.msr decodes them: "not encrypted".
"""

from __future__ import annotations

import gzip
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from sevbox.guest.image import CpioEntry, newc_archive
from sevbox.host.guestcheck import mode_from_kernel
from sevbox.host.msr import MSR_SEV_STATUS, decode_sev_status
from sevbox.pins import data_dir, pins

pytestmark = pytest.mark.vm

INIT = f"""#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
insmod /msr.ko
echo "SEVSTATUS-BEGIN"
dd if=/dev/cpu/0/msr bs=8 count=1 iflag=skip_bytes skip={MSR_SEV_STATUS} 2>/dev/null | od -An -tx1 -v
echo "SEVSTATUS-END rc=$?"
dmesg | grep -i 'memory encryption'
poweroff -f
"""


def test_sev_status_in_a_plain_guest_decodes_as_not_encrypted(tmp_path: Path) -> None:
    version = pins()["KERNEL_PACKAGE"].removeprefix("linux-image-")
    kdir = data_dir() / "kernel"
    kernel = kdir / "boot" / f"vmlinuz-{version}"
    msr_ko = kdir / "lib/modules" / version / "kernel/arch/x86/kernel/msr.ko"
    archive = newc_archive(
        [
            CpioEntry("init", 0o100755, INIT.encode()),
            CpioEntry("bin/busybox", 0o100755, Path(shutil.which("busybox") or "/bin/busybox").read_bytes()),
            CpioEntry("msr.ko", 0o100644, msr_ko.read_bytes()),
            *(CpioEntry(d, 0o040755) for d in ("dev", "proc", "sys")),
        ]
    )
    initrd = tmp_path / "initrd.gz"
    initrd.write_bytes(gzip.compress(archive, 1))
    argv = ["qemu-system-x86_64", "-machine", "q35,accel=tcg", "-cpu", "EPYC", "-m", "256", "-nodefaults",
            "-display", "none", "-serial", "stdio", "-no-reboot", "-kernel", str(kernel),
            "-initrd", str(initrd), "-append", "console=ttyS0 quiet panic=-1"]  # fmt: skip
    out = subprocess.run(argv, capture_output=True, timeout=180, check=False).stdout.decode(
        "utf-8", "replace"
    )
    m = re.search(r"SEVSTATUS-BEGIN\s+((?:[0-9a-f]{2}\s+){8})SEVSTATUS-END rc=0", out)
    assert m, out[-2000:]
    value = int.from_bytes(bytes.fromhex("".join(m.group(1).split())), "little")
    status = decode_sev_status(value)
    assert status.mode == "none" and not status.encrypted
    assert status.describe().endswith("not encrypted (the SEV bit is clear)")
    assert mode_from_kernel(out.splitlines()) is None  # and the kernel claims no memory encryption
