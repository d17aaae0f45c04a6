"""Fetch from AMD's Key Distribution Service (KDS): the network edge, with a cache directory.

URLs come from :mod:`sevbox.sev.kds` (pure). What is fetched is checked before it is cached: a
``cert_chain`` must be the product's chain and its ARK must be the one built into sevbox; a VCEK
must be signed by the product's ASK and carry the hwID and SPLs asked for; a CRL must be a DER CRL
signed by the product's ARK. Network problems raise :class:`~sevbox.errors.HostError` with the URL
and what to do; bad content raises FormatError or VerificationError.

The transport is one function (``url, timeout -> bytes``) so tests can replace the network.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from sevbox import __version__
from sevbox.errors import FormatError, HostError, VerificationError
from sevbox.sev import kds
from sevbox.sev.snp import TcbVersion
from sevbox.sev.vcek import (
    ProductChain,
    builtin_chain,
    canonical_product,
    endorsement_extensions,
    parse_certificate,
    parse_product_chain,
    verify_link,
)

__all__ = ["Fetched", "KdsClient", "default_cache_dir", "urllib_get"]

log = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())

Transport = Callable[[str, float], bytes]
_MAX_BYTES = 1 << 20


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/sevbox/kds`` (default ``~/.cache/sevbox/kds``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "sevbox" / "kds"


def urllib_get(url: str, timeout: float) -> bytes:
    """HTTP(S) GET with a timeout; HostError for anything that is not a 200 with a body."""
    request = urllib.request.Request(url, headers={"User-Agent": f"sevbox/{__version__}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            data: bytes = resp.read(_MAX_BYTES + 1)
    except urllib.error.HTTPError as err:
        hint = None
        if err.code == 429:
            retry = err.headers.get("Retry-After") if err.headers else None
            hint = f"KDS rate-limits clients; retry after {retry or 'a while'} seconds"
        elif err.code == 404:
            hint = "check the product, chip ID and TCB values"
        raise HostError(f"KDS answered HTTP {err.code} {err.reason} for {url}", hint=hint) from None
    except (urllib.error.URLError, TimeoutError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise HostError(
            f"cannot reach {urlsplit(url).netloc or url}: {reason}",
            hint="no network? use --url-base for a mirror, or put the files in --cache-dir",
        ) from None
    if len(data) > _MAX_BYTES:
        raise HostError(f"answer from {url} is larger than {_MAX_BYTES} bytes")
    if not data:
        raise HostError(f"empty answer from {url}")
    return data


@dataclass(frozen=True)
class Fetched:
    url: str
    data: bytes = field(repr=False)
    path: Path | None
    from_cache: bool


def _cache_name(url: str) -> Path:
    parts = urlsplit(url)
    rel = parts.path.strip("/")
    if parts.query:
        rel += "@" + parts.query
    safe = [re.sub(r"[^A-Za-z0-9._=@&-]", "_", p) for p in rel.split("/") if p not in ("", ".", "..")]
    return Path(*safe) if safe else Path("_")


@dataclass
class KdsClient:
    """Fetches and caches KDS objects. ``base_url`` may point at a mirror (or a test server)."""

    base_url: str = kds.KDS_BASE
    cache_dir: Path | None = None
    timeout: float = 10.0
    transport: Transport = urllib_get
    refresh: bool = False  # ignore cached copies (still writes the new one)
    roots: Callable[[str], ProductChain] = builtin_chain  # the trusted chain per product

    def _get(self, url: str, check: Callable[[bytes], None]) -> Fetched:
        path = self.cache_dir / _cache_name(url) if self.cache_dir else None
        if path is not None and not self.refresh and path.is_file():
            data = path.read_bytes()
            try:
                check(data)
            except (FormatError, VerificationError) as err:
                log.warning("ignoring bad cached %s: %s", path, err)
            else:
                log.debug("KDS cache hit %s", path)
                return Fetched(url, data, path, True)
        log.info("GET %s", url)
        data = self.transport(url, self.timeout)
        check(data)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        return Fetched(url, data, path, False)

    def fetch_ca(self, product: str, *, vlek: bool = False) -> tuple[Fetched, ProductChain]:
        """The product's cert_chain, checked against the built-in ARK and verified link by link."""
        prod = canonical_product(product)
        url = kds.cert_chain_url(prod, vlek=vlek, base=self.base_url)
        result: list[ProductChain] = []

        def check(data: bytes) -> None:
            chain = parse_product_chain(data, product=prod)
            mid = chain.intermediate(vlek)
            if mid is None:
                raise FormatError(f"{url} holds no {'ASVK' if vlek else 'ASK'}", what="AMD certificate chain")
            if chain.ark.der != self.roots(prod).ark.der:
                raise VerificationError(
                    f"the ARK from {url} is not AMD's {prod} ARK built into sevbox", check="ARK"
                )
            verify_link(mid, chain.ark, check="ARK -> " + ("ASVK" if vlek else "ASK"))
            result[:] = [chain]

        fetched = self._get(url, check)
        return fetched, result[0]

    def fetch_vcek(self, product: str, chip_id: bytes, tcb: TcbVersion) -> Fetched:
        """The VCEK for a chip at a TCB: signed by the built-in ASK, with that hwID and those SPLs."""
        prod = canonical_product(product)
        url = kds.vcek_url(prod, chip_id, tcb, base=self.base_url)
        want_hwid = kds.hwid_for(prod, chip_id)
        turin = prod == "Turin"
        want_tcb = TcbVersion(tcb.raw, turin)

        def check(data: bytes) -> None:
            cert = parse_certificate(data, what="VCEK")
            ask = self.roots(prod).ask
            if ask is None:
                raise FormatError(f"sevbox has no built-in {prod} ASK", what="AMD certificate chain")
            verify_link(cert, ask, check="ASK -> VCEK")
            ext = endorsement_extensions(cert)
            if ext.hwid != want_hwid:
                raise VerificationError(f"the VCEK from {url} is for another chip", check="hwID")
            got = ext.tcb(turin=turin)
            if got.parts() != want_tcb.parts():
                raise VerificationError(
                    f"the VCEK from {url} is for TCB {got.describe()}, not {want_tcb.describe()}", check="TCB"
                )

        return self._get(url, check)

    def fetch_crl(self, product: str, *, vlek: bool = False) -> Fetched:
        """The product's CRL (DER), with its signature checked against the built-in ARK."""
        from cryptography import x509

        prod = canonical_product(product)
        url = kds.crl_url(prod, vlek=vlek, base=self.base_url)

        def check(data: bytes) -> None:
            try:
                crl = x509.load_der_x509_crl(data)
            except ValueError:
                raise FormatError(f"{url} did not return a DER CRL", what="CRL") from None
            ark_key = self.roots(prod).ark.public_key
            try:
                valid = crl.is_signature_valid(ark_key)
            except Exception:  # an unsupported signature scheme is a failed check, not a crash
                valid = False
            if not valid:
                raise VerificationError(f"the CRL from {url} is not signed by AMD's {prod} ARK", check="CRL")

        return self._get(url, check)
