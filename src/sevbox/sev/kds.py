"""AMD Key Distribution Service (KDS) URLs: pure string building, no network (see sevbox.host.kds).

AMD "VCEK Certificate and KDS Interface Specification" #57230, relative to https://kdsintf.amd.com::

    GET /vcek/v1/{product}/cert_chain                 ASK then ARK (PEM)
    GET /vlek/v1/{product}/cert_chain                 ASVK then ARK (PEM)
    GET /vcek/v1/{product}/crl   /vlek/v1/{product}/crl   the product's CRL (DER)
    GET /vcek/v1/{product}/{hwid}?blSPL=B&teeSPL=T&snpSPL=S&ucodeSPL=U      a VCEK (DER)

``product`` is ``Milan``, ``Genoa`` or ``Turin`` (Siena parts use ``Genoa``). ``hwid`` is the report's
CHIP_ID in lower-case hex: all 64 bytes, except on Turin where it is the first 8 bytes. Turin's
query adds its FMC SPL first: ``?fmcSPL=F&blSPL=B&teeSPL=T&snpSPL=S&ucodeSPL=U``. SPLs are decimal.
VLEKs are not served by hardware ID (they are provisioned to cloud providers), so there is no VLEK
leaf URL here.
"""

from __future__ import annotations

from sevbox.errors import FormatError
from sevbox.sev.snp import AttestationReport, TcbVersion
from sevbox.sev.vcek import CHIP_ID_SIZE, TURIN_HWID_SIZE, canonical_product

__all__ = ["KDS_BASE", "cert_chain_url", "crl_url", "hwid_for", "vcek_url", "vcek_url_for_report"]

KDS_BASE = "https://kdsintf.amd.com"


def _base(base: str, vlek: bool, product: str) -> str:
    return f"{base.rstrip('/')}/{'vlek' if vlek else 'vcek'}/v1/{canonical_product(product)}"


def cert_chain_url(product: str, *, vlek: bool = False, base: str = KDS_BASE) -> str:
    """URL of the product's ASK+ARK (or, with ``vlek``, ASVK+ARK) PEM chain."""
    return f"{_base(base, vlek, product)}/cert_chain"


def crl_url(product: str, *, vlek: bool = False, base: str = KDS_BASE) -> str:
    """URL of the product's certificate revocation list (DER)."""
    return f"{_base(base, vlek, product)}/crl"


def hwid_for(product: str, chip_id: bytes) -> bytes:
    """The hardware ID KDS wants: CHIP_ID (64 bytes), or its first 8 bytes on Turin.

    Accepts an 8-byte ID for Turin as is. A zero CHIP_ID (masked in the report) is refused.
    """
    prod = canonical_product(product)
    if prod == "Turin" and len(chip_id) in (TURIN_HWID_SIZE, CHIP_ID_SIZE):
        hwid = chip_id[:TURIN_HWID_SIZE]
    elif len(chip_id) == CHIP_ID_SIZE:
        hwid = chip_id
    else:
        sizes = "64 (or 8)" if prod == "Turin" else "64"
        raise FormatError(f"chip ID is {len(chip_id)} bytes; {prod} needs {sizes}", what="chip ID")
    if not any(hwid):
        raise FormatError(
            "chip ID is all zeros (masked in the report): KDS cannot serve a VCEK", what="chip ID"
        )
    return hwid


def vcek_url(product: str, chip_id: bytes, tcb: TcbVersion, *, base: str = KDS_BASE) -> str:
    """URL of the VCEK for this chip at this TCB. ``tcb`` must be in the product's layout."""
    prod = canonical_product(product)
    turin = prod == "Turin"
    if tcb.turin != turin:
        tcb = TcbVersion(tcb.raw, turin)
    hwid = hwid_for(prod, chip_id).hex()
    query = f"blSPL={tcb.bootloader}&teeSPL={tcb.tee}&snpSPL={tcb.snp}&ucodeSPL={tcb.microcode}"
    if turin:
        query = f"fmcSPL={tcb.fmc}&{query}"
    return f"{_base(base, False, prod)}/{hwid}?{query}"


def vcek_url_for_report(
    report: AttestationReport, product: str | None = None, *, base: str = KDS_BASE
) -> str:
    """The VCEK URL for a report: its CHIP_ID and REPORTED_TCB; product from CPUID (v3+) if not given."""
    prod = product or report.product
    if prod is None:
        raise FormatError(
            f"a version {report.version} report does not name its product: give one (milan, genoa, turin)",
            what="product",
        )
    return vcek_url(prod, report.chip_id, report.reported_tcb, base=base)
