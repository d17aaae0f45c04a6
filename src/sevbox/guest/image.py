"""The guest image: the pinned Debian kernel and an initramfs with Python and the sevbox agent.

Pure parts (bytes in, bytes out): :func:`newc_archive` (a reproducible cpio "newc" archive: fixed
mtimes, uids, inode numbers and order), :func:`modinfo_depends` (a kernel module's ``depends=`` from
its ELF ``.modinfo`` section), :func:`module_load_order`, :func:`extract_vmlinux` (the ELF inside a
bzImage, for QEMU's fast PVH entry) and :func:`pyc_bytes`.

Effects: :func:`build_image` collects the inputs from the host (kernel, modules, Debian's
``/usr/bin/python3.11`` and the shared libraries it links, the stdlib modules the agent imports,
precompiled, in a stored zip), hashes them, and writes ``initrd.img`` + ``vmlinux`` under
``data_dir()/images/<hash>/``, or returns the cached one. Same inputs give the same bytes.

Layout inside the initramfs::

    /init                                 "#!/usr/bin/python3.11 -IS" stub importing the agent
    /usr/bin/python3.11, /lib64/ld-linux-x86-64.so.2, /lib/x86_64-linux-gnu/<libs>
    /usr/lib/python311.zip                precompiled stdlib subset + sevbox.protocol + the agent
    /usr/lib/python3.11/lib-dynload/      the few extension modules the agent needs
    /lib/modules/<name>.ko, /etc/sevbox/modules   kernel modules and their load order per transport
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import logging
import lzma
import marshal
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from sevbox import pins
from sevbox.errors import FormatError, HostError

__all__ = [
    "AGENT_MODULES",
    "MODULE_SETS",
    "CpioEntry",
    "GuestImage",
    "build_image",
    "extract_vmlinux",
    "modinfo_depends",
    "module_load_order",
    "newc_archive",
    "pyc_bytes",
]

log = logging.getLogger(__name__)

BUILDER_VERSION = "2"  # bump when the layout changes: it is part of the cache key
PYTHON = "/usr/bin/python3.11"
STDLIB = "/usr/lib/python3.11"
AGENT_MODULES = ("sevbox.protocol", "sevbox.guest.agent", "sevbox.guest.agent.main")
# Stdlib modules the agent imports lazily (not seen by importing it): listed so they are shipped.
EXTRA_STDLIB = ("ctypes", "resource", "pty", "termios", "warnings")
EXTENSIONS = ("_ctypes", "resource", "_json", "termios")
# Modules per virtio transport, named by what the agent needs; dependencies are added and ordered.
# msr: the agent reads SEV_STATUS (MSR 0xC0010131) for GuestInfo.
MODULE_SETS: dict[str, tuple[str, ...]] = {
    "mmio": ("virtio_mmio", "virtio_console", "9pnet_virtio", "9p", "msr"),
    "pci": ("virtio_pci", "virtio_console", "9pnet_virtio", "9p", "msr"),
}


# --- cpio (newc) -----------------------------------------------------------------------------


@dataclass(frozen=True)
class CpioEntry:
    """One archive member. ``data`` is file content, or the target for a symlink."""

    path: str
    mode: int  # full st_mode: 0o040755 dir, 0o100755 file, 0o120777 symlink
    data: bytes = b""


def _newc_header(ino: int, mode: int, nlink: int, size: int, name: bytes) -> bytes:
    fields = (ino, mode, 0, 0, nlink, 0, size, 0, 0, 0, 0, len(name) + 1, 0)
    return b"070701" + b"".join(b"%08X" % f for f in fields) + name + b"\0"


def _pad4(n: int) -> bytes:
    return b"\0" * (-n % 4)


def newc_archive(entries: Iterable[CpioEntry]) -> bytes:
    """A cpio newc archive, byte-for-byte reproducible: entries sorted by path, parents first,
    inode numbers counted from 1, uid/gid/mtime 0, then the TRAILER!!! record."""
    by_path: dict[str, CpioEntry] = {}
    for e in entries:
        p = e.path.strip("/")
        if not p or ".." in p.split("/"):
            raise ValueError(f"bad archive path {e.path!r}")
        if p in by_path and by_path[p] != CpioEntry(p, e.mode, e.data):
            raise ValueError(f"two different entries for {p!r}")
        by_path[p] = CpioEntry(p, e.mode, e.data)
    # Implicit parent directories.
    for p in list(by_path):
        parts = p.split("/")
        for i in range(1, len(parts)):
            by_path.setdefault("/".join(parts[:i]), CpioEntry("/".join(parts[:i]), 0o040755))
    out = io.BytesIO()
    for ino, p in enumerate(sorted(by_path, key=lambda s: s.split("/")), start=1):
        e = by_path[p]
        name = p.encode()
        is_dir = (e.mode & 0o170000) == 0o040000
        data = b"" if is_dir else e.data
        hdr = _newc_header(ino, e.mode, 2 if is_dir else 1, len(data), name)
        out.write(hdr + _pad4(len(hdr)) + data + _pad4(len(data)))
    hdr = _newc_header(0, 0, 1, 0, b"TRAILER!!!")
    out.write(hdr + _pad4(len(hdr)))
    return out.getvalue()


# --- kernel modules --------------------------------------------------------------------------


def _elf_section(elf: bytes, wanted: bytes) -> bytes:
    if len(elf) < 64 or elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        raise FormatError("not a little-endian ELF64 file", what="kernel module")
    try:
        (shoff,) = struct.unpack_from("<Q", elf, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", elf, 0x3A)
        if shentsize != 64 or shstrndx >= shnum:
            raise FormatError("bad ELF section table", what="kernel module")

        def sec(i: int) -> tuple[int, int, int]:
            name, _t, _f, _a, off, size = struct.unpack_from("<IIQQQQ", elf, shoff + i * 64)
            if off + size > len(elf):
                raise FormatError("ELF section runs past the end of the file", what="kernel module")
            return name, off, size

        _, stroff, strsize = sec(shstrndx)
        for i in range(shnum):
            name_off, off, size = sec(i)
            if name_off >= strsize:
                raise FormatError("ELF section name out of range", what="kernel module")
            end = elf.index(b"\0", stroff + name_off)
            if elf[stroff + name_off : end] == wanted:
                return elf[off : off + size]
    except (struct.error, ValueError) as err:
        raise FormatError(f"truncated ELF file ({err})", what="kernel module") from None
    raise FormatError(f"no {wanted.decode()} section", what="kernel module")


def modinfo_depends(ko: bytes) -> tuple[str, ...]:
    """The modules a .ko depends on, from ``depends=`` in its ``.modinfo`` section."""
    for item in _elf_section(ko, b".modinfo").split(b"\0"):
        if item.startswith(b"depends="):
            return tuple(d.decode() for d in item[8:].split(b",") if d)
    return ()


def _norm(name: str) -> str:
    return name.replace("-", "_")


def module_load_order(wanted: Sequence[str], depends: Callable[[str], tuple[str, ...]]) -> list[str]:
    """``wanted`` plus their dependencies, each after everything it depends on (depth first, in
    the order given); ``depends(name)`` answers for one module. Cycles raise FormatError."""
    order: list[str] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(name: str, chain: tuple[str, ...]) -> None:
        n = _norm(name)
        if state.get(n) == 2:
            return
        if state.get(n) == 1:
            raise FormatError(f"module dependency cycle: {' -> '.join((*chain, n))}", what="kernel module")
        state[n] = 1
        for d in depends(n):
            visit(d, (*chain, n))
        state[n] = 2
        order.append(n)

    for w in wanted:
        visit(w, ())
    return order


# --- kernel ----------------------------------------------------------------------------------

XZ_MAGIC = b"\xfd7zXZ\x00"


def extract_vmlinux(bzimage: bytes) -> bytes:
    """The uncompressed ELF kernel inside a bzImage whose payload is XZ (Debian's)."""
    if len(bzimage) < 0x202 + 4 or bzimage[0x202:0x206] != b"HdrS":
        raise FormatError("not a bzImage (no HdrS setup header)", what="kernel")
    i = bzimage.find(XZ_MAGIC)
    if i < 0:
        raise FormatError("no XZ payload in the bzImage", what="kernel")
    try:
        out = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(bzimage[i:])
    except lzma.LZMAError as err:
        raise FormatError(f"corrupt XZ payload in the bzImage: {err}", what="kernel") from None
    if out[:4] != b"\x7fELF":
        raise FormatError("the bzImage payload is not an ELF kernel", what="kernel")
    return out


# --- Python ----------------------------------------------------------------------------------


def pyc_bytes(source: bytes, filename: str) -> bytes:
    """A .pyc for ``source``: magic, flags 0, mtime 0, size 0, then the marshalled code (optimize=2).
    Loaded sourceless from a zip, so the zero timestamp is never checked."""
    code = compile(source, filename, "exec", dont_inherit=True, optimize=2)
    # marshal version 2: no back-references, whose use depends on refcounts (so on what else the
    # process compiled before): version 3+ output is not reproducible across builds.
    return importlib.util.MAGIC_NUMBER + b"\0" * 12 + marshal.dumps(code, 2)


def _stored_zip(members: Mapping[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for name in sorted(members):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            z.writestr(info, members[name])
    return buf.getvalue()


# --- the build (effects) ---------------------------------------------------------------------


@dataclass(frozen=True)
class GuestImage:
    """A built image. ``vmlinux`` boots through PVH (no firmware); ``bzimage`` for OVMF/SEV."""

    key: str
    directory: Path
    initrd: Path
    vmlinux: Path
    bzimage: Path
    kernel_version: str
    compression: str


_LISTER = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
for m in sys.argv[2:]:
    __import__(m)
out = {}
for name, mod in sorted(sys.modules.items()):
    f = getattr(mod, "__file__", None)
    if f:
        out[name] = [f, hasattr(mod, "__path__")]
print(json.dumps(out))
"""


def _stdlib_modules(src_root: Path) -> dict[str, tuple[Path, bool]]:
    """Module name -> (source path, is package) for every stdlib module the agent imports."""
    mods = [*AGENT_MODULES, *EXTRA_STDLIB]
    # A bare environment: nothing from the host's site-packages may leak in.
    proc = subprocess.run(
        [PYTHON, "-I", "-S", "-c", _LISTER, str(src_root), *mods],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin"},
    )
    if proc.returncode != 0:
        raise HostError(f"could not list the agent's imports with {PYTHON}: {proc.stderr.strip()[-300:]}")
    out: dict[str, tuple[Path, bool]] = {}
    for name, (f, is_pkg) in json.loads(proc.stdout).items():
        if f.startswith(STDLIB + "/") and f.endswith(".py") and "/lib-dynload/" not in f:
            out[name] = (Path(f), bool(is_pkg))
    return out


def _shared_libs(paths: Iterable[str]) -> dict[str, Path]:
    """The shared libraries (by their load path) that the given ELF files link, via ldd."""
    libs: dict[str, Path] = {}
    for p in paths:
        proc = subprocess.run(["ldd", p], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise HostError(f"ldd {p} failed: {proc.stderr.strip()}")
        for line in proc.stdout.splitlines():
            parts = line.split()
            if "=>" in parts and len(parts) >= 3 and parts[2].startswith("/"):
                libs[parts[2]] = Path(parts[2]).resolve()
            elif parts and parts[0].startswith("/"):
                libs[parts[0]] = Path(parts[0]).resolve()
    return libs


def kernel_dir() -> Path:
    return pins.data_dir() / "kernel"


def _find_kernel(kdir: Path) -> tuple[Path, Path, str]:
    boots = sorted((kdir / "boot").glob("vmlinuz-*"))
    if not boots:
        raise HostError(f"no guest kernel under {kdir}/boot", hint="run scripts/setup")
    bz = boots[-1]
    version = bz.name.removeprefix("vmlinuz-")
    mdir = kdir / "lib" / "modules" / version
    if not mdir.is_dir():
        raise HostError(f"no modules for kernel {version} under {mdir}", hint="run scripts/setup")
    return bz, mdir, version


def _index_modules(mdir: Path) -> dict[str, Path]:
    return {_norm(p.name.removesuffix(".ko")): p for p in sorted(mdir.rglob("*.ko"))}


def _file_entries(items: Mapping[str, Path]) -> list[CpioEntry]:
    return [CpioEntry(dest, 0o100755, src.read_bytes()) for dest, src in items.items()]


INIT_STUB = b"#!/usr/bin/python3.11 -IS\nfrom sevbox.guest.agent.main import main\nmain()\n"


def _compress(data: bytes, compression: str) -> bytes:
    if compression == "none":
        return data
    if compression == "lz4":
        # The kernel unpacks only lz4's legacy frame format (-l).
        proc = subprocess.run(["lz4", "-l", "-9", "-q", "-c"], input=data, capture_output=True, check=False)
        if proc.returncode != 0:
            raise HostError(f"lz4 failed: {proc.stderr.decode(errors='replace').strip()}")
        return proc.stdout
    raise ValueError(f"unknown compression {compression!r} (lz4|none)")


# Chosen by measurement (bench/bench_sandbox.py (d), 5 interleaved launches -> agent ready, TCG):
# none 1.98 s (12.4 MB) vs lz4 -l -9 2.18 s (5.8 MB): QEMU copies 12 MB in no time, while the
# kernel's lz4 under emulation costs more than it saves. Images used to fail for some sizes: that
# was the initrd's tail overwriting microvm's ACPI tables, fixed by :func:`pad_initrd`.
DEFAULT_COMPRESSION = "none"


def build_image(
    *,
    compression: str = DEFAULT_COMPRESSION,
    cache_dir: Path | None = None,
    kdir: Path | None = None,
    force: bool = False,
) -> GuestImage:
    """Build the guest image, or return the cached one with the same input hash."""
    if compression not in ("lz4", "none"):
        raise ValueError(f"unknown compression {compression!r} (lz4|none)")
    root = cache_dir or pins.data_dir() / "images"
    if not force:
        known = _memo_lookup(root, compression)
        if known is not None:
            return known
    src_root = Path(__file__).resolve().parents[2]
    bz, mdir, kver = _find_kernel(kdir or kernel_dir())
    modules = _index_modules(mdir)

    def deps(name: str) -> tuple[str, ...]:
        if name not in modules:
            raise HostError(f"kernel module {name} not found under {mdir}")
        return modinfo_depends(modules[name].read_bytes())

    orders = {t: module_load_order(w, deps) for t, w in MODULE_SETS.items()}
    stdlib = _stdlib_modules(src_root)
    dynload = {
        f"usr/lib/python3.11/lib-dynload/{p.name}": p
        for e in EXTENSIONS
        for p in sorted(Path(STDLIB, "lib-dynload").glob(f"{e}.cpython-*.so"))
    }
    libs = _shared_libs([PYTHON, *(str(p) for p in dynload.values())])

    # Inputs, hashed: everything that ends up in the image, plus the builder's own source.
    files: dict[str, Path] = {"usr/bin/python3.11": Path(PYTHON)}
    for load_path, real in libs.items():
        files[load_path.lstrip("/")] = real
    files.update(dynload)
    all_mods = sorted({m for order in orders.values() for m in order})
    for m in all_mods:
        files[f"lib/modules/{m}.ko"] = modules[m]
    py_sources: dict[str, tuple[Path, bool]] = dict(stdlib)
    for m in AGENT_MODULES:
        spec = importlib.util.find_spec(m)
        if spec is None or spec.origin is None:
            raise HostError(f"cannot find the agent module {m}")
        py_sources[m] = (Path(spec.origin), spec.submodule_search_locations is not None)
    h = hashlib.sha256()
    h.update(f"builder {BUILDER_VERSION} {compression} {sys.version}\n".encode())
    h.update(Path(__file__).read_bytes())
    for dest, src in sorted(files.items()):
        h.update(f"{dest}\n".encode() + hashlib.sha256(src.read_bytes()).digest())
    for name, (src, _) in sorted(py_sources.items()):
        h.update(f"{name}\n".encode() + hashlib.sha256(src.read_bytes()).digest())
    h.update(hashlib.sha256(bz.read_bytes()).digest())
    key = h.hexdigest()[:24]
    inputs = sorted(
        {str(p) for p in (*files.values(), *(s for s, _ in py_sources.values()), bz, Path(__file__))}
    )

    out = root / key
    image = GuestImage(
        key=key,
        directory=out,
        initrd=out / "initrd.img",
        vmlinux=out / "vmlinux",
        bzimage=bz,
        kernel_version=kver,
        compression=compression,
    )
    if not force and image.initrd.is_file() and image.vmlinux.is_file():
        _memo_store(root, compression, image, inputs)
        return image

    log.info("building guest image %s", key)
    initrd = _initramfs(py_sources, files, orders, compression)
    vmlinux = extract_vmlinux(bz.read_bytes())
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=root))
    try:
        (tmp / "initrd.img").write_bytes(initrd)
        (tmp / "vmlinux").write_bytes(vmlinux)
        (tmp / "inputs.json").write_text(
            json.dumps({"kernel": str(bz), "files": {k: str(v) for k, v in sorted(files.items())}}, indent=1)
        )
        if force and out.exists():
            shutil.rmtree(out)
        try:
            tmp.rename(out)
        except OSError:
            if not (image.initrd.is_file() and image.vmlinux.is_file()):  # not a concurrent winner
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    _memo_store(root, compression, image, inputs)
    return image


# A launch must not re-hash ~80 MB of inputs (0.1 s) each time: the last build's input paths and
# their stat fingerprint (size, mtime, inode) are remembered; when none changed, the key is known.
# The agent's sources are among the inputs, so a new import there falls back to the full path.


def _fingerprint(paths: Iterable[str]) -> str:
    h = hashlib.sha256()
    for p in paths:
        st = os.stat(p)
        h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}\n".encode())
    return h.hexdigest()


def _memo_lookup(root: Path, compression: str) -> GuestImage | None:
    try:
        memo = json.loads((root / f"last-{compression}.json").read_text())
        if memo.get("builder") != BUILDER_VERSION or _fingerprint(memo["inputs"]) != memo["fingerprint"]:
            return None
        d = root / memo["key"]
        image = GuestImage(
            key=memo["key"],
            directory=d,
            initrd=d / "initrd.img",
            vmlinux=d / "vmlinux",
            bzimage=Path(memo["bzimage"]),
            kernel_version=memo["kernel_version"],
            compression=compression,
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return image if image.initrd.is_file() and image.vmlinux.is_file() else None


def _memo_store(root: Path, compression: str, image: GuestImage, inputs: list[str]) -> None:
    memo = {
        "builder": BUILDER_VERSION,
        "key": image.key,
        "bzimage": str(image.bzimage),
        "kernel_version": image.kernel_version,
        "inputs": inputs,
        "fingerprint": _fingerprint(inputs),
    }
    try:
        tmp = root / f".last-{compression}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(memo))
        tmp.replace(root / f"last-{compression}.json")
    except OSError:
        pass


def _initramfs(
    py_sources: Mapping[str, tuple[Path, bool]],
    files: Mapping[str, Path],
    orders: Mapping[str, list[str]],
    compression: str,
) -> bytes:
    members: dict[str, bytes] = {}
    for name, (src, is_pkg) in py_sources.items():
        rel = name.replace(".", "/") + ("/__init__.pyc" if is_pkg else ".pyc")
        shown = f"{STDLIB}/{rel[:-1]}" if not name.startswith("sevbox") else f"<sevbox>/{rel[:-1]}"
        members[rel] = pyc_bytes(src.read_bytes(), shown)
    # The host package's __init__ files are not the agent's: ship empty ones.
    members["sevbox/__init__.pyc"] = pyc_bytes(b"", "<sevbox>/sevbox/__init__.py")
    members["sevbox/guest/__init__.pyc"] = pyc_bytes(b"", "<sevbox>/sevbox/guest/__init__.py")
    entries = _file_entries(files)
    entries.append(CpioEntry("usr/lib/python311.zip", 0o100644, _stored_zip(members)))
    entries.append(CpioEntry("init", 0o100755, INIT_STUB))
    entries.append(
        CpioEntry(
            "etc/sevbox/modules",
            0o100644,
            "".join(f"{t} {' '.join(o)}\n" for t, o in sorted(orders.items())).encode(),
        )
    )
    for d in ("dev", "proc", "sys", "run", "tmp", "mnt", "usr/lib/python3.11/lib-dynload"):
        entries.append(CpioEntry(d, 0o040755))
    return pad_initrd(_compress(newc_archive(entries), compression))


def pad_initrd(blob: bytes) -> bytes:
    """Zero-pad to a whole number of 4 KiB pages (the kernel skips zeros after an archive).

    QEMU loads the initrd to end just below the top of low RAM, starting on a page boundary, so
    its last bytes land in the last page, where microvm keeps its ACPI tables (DSDT at offset
    0xd00 of that page, here): when ``len % 4096`` exceeded 0xd00 the initrd overwrote them, and
    the guest crawled through ACPI init (~25 s) and never found its virtio-mmio devices. Measured:
    every failing image had ``len % 4096 > 3328``; padded, the same images boot. A page-multiple
    initrd ends on the page boundary below that last page.
    """
    return blob + b"\0" * (-len(blob) % 4096)
