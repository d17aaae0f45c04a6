"""``sevbox image build|show``: the guest image every container boots (kernel + initramfs + agent).

The image is built from the pinned Debian kernel (set-up unpacks it), Debian's python3 and the
sevbox agent; it is cached under the data dir by a hash of its inputs and is reproducible (the same
inputs give the same bytes), so ``build`` is instant when nothing changed.
"""

from __future__ import annotations

import argparse
import json
import time

__all__ = ["configure"]


def configure(verb: str, p: argparse.ArgumentParser) -> None:
    from sevbox.cli import Parser, _Formatter

    p.set_defaults(subparser=p)
    sub = p.add_subparsers(dest="image_verb", metavar="SUB-COMMAND", parser_class=Parser)
    for name, help_ in (("build", "build the guest image, or find it in the cache"),
                        ("show", "print the cached guest image's paths (builds it if needed)")):  # fmt: skip
        sp = sub.add_parser(name, help=help_, description=help_, formatter_class=_Formatter)
        sp.add_argument("--json", action="store_true", help="print the result as JSON")
        sp.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from sevbox.guest.image import build_image

    t0 = time.monotonic()
    image = build_image()
    took = time.monotonic() - t0
    info = {
        "key": image.key,
        "directory": str(image.directory),
        "initrd": str(image.initrd),
        "initrd_bytes": image.initrd.stat().st_size,
        "vmlinux": str(image.vmlinux),
        "bzimage": str(image.bzimage),
        "kernel_version": image.kernel_version,
        "compression": image.compression,
        "seconds": round(took, 3),
    }
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        size = f"{image.initrd.stat().st_size >> 10} KiB {image.compression}"
        print(f"guest image {image.key} (kernel {image.kernel_version}, initrd {size}) in {image.directory} "
              f"[{took:.2f} s]")  # fmt: skip
    return 0
