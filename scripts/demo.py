"""The main job, end to end: guest image, a busybox container in its own VM, and the truth about
whether that VM's memory is encrypted (asked of the host, of the guest, and of QEMU's memory)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SEVBOX = [sys.executable, "-m", "sevbox"]


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def sevbox(*args: str, check: bool = True, **kw: object) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([*SEVBOX, *args], text=True, check=False, **kw)  # type: ignore[call-overload]
    if check and r.returncode != 0:
        sys.exit(f"demo: 'sevbox {' '.join(args)}' failed with exit status {r.returncode}")
    return r  # type: ignore[no-any-return]


def busybox_bundle(where: Path) -> Path:
    rootfs = where / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    shutil.copy2("/bin/busybox", rootfs / "bin" / "busybox")
    for applet in ("sh", "echo", "cat", "uname", "grep", "dmesg", "sleep", "hostname", "id"):
        (rootfs / "bin" / applet).symlink_to("busybox")
    sevbox("spec", "--bundle", str(where))
    config = json.loads((where / "config.json").read_text())
    config["process"]["terminal"] = False
    config["process"]["args"] = [
        "sh", "-c",
        "echo \"hello from $(hostname), kernel $(uname -r), uid $(id -u)\"; sleep 30",
    ]  # fmt: skip
    config["root"]["readonly"] = False
    (where / "config.json").write_text(json.dumps(config, indent=2))
    return where


def main() -> int:
    say("host readiness (sevbox check)")
    sevbox("check", check=False)
    say("guest image (sevbox image build)")
    sevbox("image", "build")
    with tempfile.TemporaryDirectory(prefix="sevbox-demo-") as tmp:
        root = Path(tmp) / "state"
        bundle = busybox_bundle(Path(tmp) / "bundle")
        g = ["--root", str(root)]
        say("a busybox container in its own VM (sevbox create + start)")
        r_out, w_out = os.pipe()
        sevbox(*g, "create", "--bundle", str(bundle), "demo", stdout=w_out, stdin=subprocess.DEVNULL)
        os.close(w_out)
        try:
            sevbox(*g, "start", "demo")
            with os.fdopen(r_out, "r") as out:
                print("  container: " + out.readline().rstrip(), flush=True)
                state = json.loads(sevbox(*g, "state", "demo", capture_output=True).stdout)
                ann = state["annotations"]
                say("what the runtime chose")
                print(f"  launch security: {ann.get('sevbox.launch-security.effective', '?')} "
                      f"({ann.get('sevbox.launch-security.reason', '')})")  # fmt: skip
                print(f"  accelerator: {ann.get('sevbox.accel', '?')}")
                print(f"  the guest kernel says: {ann.get('sevbox.guest.memory-encryption', '?')}")
                print(f"  the guest's SEV_STATUS MSR: {ann.get('sevbox.guest.sev-status', '?')}")
                say("is the guest's memory encrypted? (sevbox verify-memory: look in QEMU's memory)")
                verdict = sevbox(*g, "verify-memory", "demo", check=False)
                say("verdict")
                if verdict.returncode == 0:
                    print("  the canary was not visible to the host: guest memory is encrypted")
                else:
                    print("  guest memory is NOT encrypted on this host (no SEV): the host can read it")
        finally:
            sevbox(*g, "delete", "--force", "demo", check=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
