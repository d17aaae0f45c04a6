"""AMD KDS: exact URLs (pure), and the fetching edge against a local HTTP server started here."""

from __future__ import annotations

import datetime as dt
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from tests.unit.sev import snpkit

from sevbox.errors import FormatError, HostError, VerificationError
from sevbox.host.kds import KdsClient
from sevbox.sev import kds
from sevbox.sev.snp import TcbVersion, parse_report_unverified
from sevbox.sev.vcek import ProductChain, builtin_chain, endorsement_extensions, parse_certificate

GSG_CHIP = bytes.fromhex(
    "3ac3fe21e13fb0990eb28a802e3fb6a29483a6b0753590c951bdd3b8e53786184ca39e359669a2b76a1936776b564ea4"
    "64cdce40c05f63c9b610c5068b006b5d"
)


def test_vcek_url_from_a_real_report_is_the_one_go_sev_guest_fetches() -> None:
    report = parse_report_unverified(snpkit.data("gsg_milan_report.bin")).decode_unverified()
    assert report.chip_id == GSG_CHIP
    url = kds.vcek_url_for_report(report, "Milan")
    assert url == (
        "https://kdsintf.amd.com/vcek/v1/Milan/" + GSG_CHIP.hex() + "?blSPL=2&teeSPL=0&snpSPL=5&ucodeSPL=68"
    )
    with pytest.raises(FormatError, match="does not name its product"):
        kds.vcek_url_for_report(report)  # v2: no CPUID


def test_turin_url_rules() -> None:
    ext = endorsement_extensions(parse_certificate(snpkit.data("virtee_turin_vcek.der")))
    assert ext.hwid is not None
    chip = ext.hwid + bytes(56)  # a Turin report's CHIP_ID: 8 meaningful bytes
    tcb = TcbVersion.from_parts(fmc=1, bootloader=2, tee=3, snp=4, microcode=9, turin=True)
    assert kds.vcek_url("turin", chip, tcb) == (
        "https://kdsintf.amd.com/vcek/v1/Turin/1e550a8ee5cf9f4d?fmcSPL=1&blSPL=2&teeSPL=3&snpSPL=4&ucodeSPL=9"
    )
    assert kds.vcek_url("Turin", ext.hwid, tcb).endswith(
        "/Turin/1e550a8ee5cf9f4d?fmcSPL=1&blSPL=2&teeSPL=3&snpSPL=4&ucodeSPL=9"
    )
    # a Milan-layout TCB given for Turin is re-read in Turin's layout (same bytes)
    same = TcbVersion(tcb.raw)
    assert kds.vcek_url("turin", chip, same) == kds.vcek_url("turin", chip, tcb)


def test_chain_and_crl_urls() -> None:
    assert kds.cert_chain_url("milan") == "https://kdsintf.amd.com/vcek/v1/Milan/cert_chain"
    assert kds.cert_chain_url("Genoa-B1", vlek=True) == "https://kdsintf.amd.com/vlek/v1/Genoa/cert_chain"
    assert kds.crl_url("turin") == "https://kdsintf.amd.com/vcek/v1/Turin/crl"
    assert (
        kds.crl_url("siena", vlek=True, base="http://127.0.0.1:9/") == "http://127.0.0.1:9/vlek/v1/Genoa/crl"
    )


def test_bad_url_inputs() -> None:
    tcb = TcbVersion(0)
    with pytest.raises(FormatError, match="64"):
        kds.vcek_url("milan", b"\x01" * 8, tcb)
    with pytest.raises(FormatError, match="all zeros"):
        kds.vcek_url("milan", bytes(64), tcb)
    with pytest.raises(FormatError, match="unknown SEV-SNP product"):
        kds.cert_chain_url("naples")


# ------------------------------------------------------------------------------------------------
# A local KDS


class _Handler(http.server.SimpleHTTPRequestHandler):
    requests: list[str]

    def do_GET(self) -> None:
        self.requests.append(self.path)
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def kds_server(tmp_path: Path) -> Iterator[tuple[str, Path, list[str]]]:
    root = tmp_path / "kds"
    (root / "vcek/v1/Milan").mkdir(parents=True)
    (root / "vlek/v1/Milan").mkdir(parents=True)
    (root / "vcek/v1/Turin").mkdir(parents=True)
    (root / "vcek/v1/Milan/cert_chain").write_bytes(snpkit.data("virtee_cert_chain_milan.pem"))
    (root / "vlek/v1/Milan/cert_chain").write_bytes(snpkit.data("gsg_milan_vlek_cert_chain.pem"))
    (root / "vcek/v1/Turin/cert_chain").write_bytes(snpkit.data("virtee_cert_chain_milan.pem"))  # wrong
    (root / f"vcek/v1/Milan/{GSG_CHIP.hex()}").write_bytes(snpkit.data("gsg_milan_vcek.der"))
    requests: list[str] = []
    handler = type("H", (_Handler,), {"requests": requests})

    def make(*args: object, **kw: object) -> http.server.BaseHTTPRequestHandler:
        return handler(*args, directory=str(root), **kw)  # type: ignore[arg-type]

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), make)  # type: ignore[arg-type]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root, requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_fetch_ca_checks_and_caches(kds_server: tuple[str, Path, list[str]], tmp_path: Path) -> None:
    base, _, requests = kds_server
    client = KdsClient(base_url=base, cache_dir=tmp_path / "cache", timeout=5)
    fetched, chain = client.fetch_ca("milan")
    assert not fetched.from_cache and requests == ["/vcek/v1/Milan/cert_chain"]
    assert chain.ark.der == builtin_chain("Milan").ark.der
    assert fetched.path is not None and fetched.path.read_bytes() == snpkit.data(
        "virtee_cert_chain_milan.pem"
    )
    again, _ = client.fetch_ca("Milan")
    assert again.from_cache and len(requests) == 1
    _, vchain = client.fetch_ca("milan", vlek=True)
    assert vchain.asvk is not None and requests[-1] == "/vlek/v1/Milan/cert_chain"
    KdsClient(base_url=base, cache_dir=tmp_path / "cache", refresh=True).fetch_ca("milan")
    assert len(requests) == 3


def test_fetch_ca_refuses_another_products_ark(
    kds_server: tuple[str, Path, list[str]], tmp_path: Path
) -> None:
    base, _, _ = kds_server
    client = KdsClient(base_url=base, cache_dir=tmp_path / "cache")
    with pytest.raises(VerificationError, match="not AMD's Turin ARK"):
        client.fetch_ca("turin")
    assert not list((tmp_path / "cache").rglob("cert_chain"))  # nothing bad was cached


def test_fetch_vcek_sends_the_exact_query_and_checks_the_answer(
    kds_server: tuple[str, Path, list[str]], tmp_path: Path
) -> None:
    base, root, requests = kds_server
    client = KdsClient(base_url=base, cache_dir=tmp_path / "cache")
    tcb = TcbVersion.from_parts(bootloader=2, tee=0, snp=5, microcode=68)
    fetched = client.fetch_vcek("milan", GSG_CHIP, tcb)
    assert requests == [f"/vcek/v1/Milan/{GSG_CHIP.hex()}?blSPL=2&teeSPL=0&snpSPL=5&ucodeSPL=68"]
    assert fetched.data == snpkit.data("gsg_milan_vcek.der")
    other_tcb = TcbVersion.from_parts(bootloader=3, tee=0, snp=8, microcode=115)
    with pytest.raises(VerificationError, match="for TCB") as info:
        client.fetch_vcek("milan", GSG_CHIP, other_tcb)  # the server ignores the query: wrong TCB served
    assert info.value.check == "TCB"
    (root / f"vcek/v1/Milan/{'11' * 64}").write_bytes(snpkit.data("gsg_milan_vcek.der"))
    with pytest.raises(VerificationError, match="another chip"):
        client.fetch_vcek("milan", b"\x11" * 64, tcb)


def test_not_found_and_unreachable_are_host_errors(kds_server: tuple[str, Path, list[str]]) -> None:
    base, _, _ = kds_server
    with pytest.raises(HostError, match="HTTP 404"):
        KdsClient(base_url=base).fetch_crl("genoa")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(HostError, match="cannot reach 127.0.0.1") as info:
        KdsClient(base_url=f"http://127.0.0.1:{port}", timeout=2).fetch_ca("milan")
    assert "--url-base" in str(info.value)


def test_cache_works_without_the_network(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    (cache / "vcek/v1/Milan").mkdir(parents=True)
    (cache / "vcek/v1/Milan/cert_chain").write_bytes(snpkit.data("gsg_milan_cert_chain.pem"))

    def offline(url: str, timeout: float) -> bytes:
        raise HostError(f"offline: {url}")

    fetched, _ = KdsClient(cache_dir=cache, transport=offline).fetch_ca("milan")
    assert fetched.from_cache
    # a corrupt cached copy is not trusted: it goes back to the network
    (cache / "vcek/v1/Milan/cert_chain").write_bytes(b"garbage")
    with pytest.raises(HostError, match="offline"):
        KdsClient(cache_dir=cache, transport=offline).fetch_ca("milan")


def _fake_roots(product: str) -> ProductChain:
    ca = snpkit.make_ca("Milan")
    return ProductChain(
        "Milan", parse_certificate(ca.ark), parse_certificate(ca.ask), parse_certificate(ca.asvk)
    )


def _crl(signer: object) -> bytes:
    ca = snpkit.make_ca("Milan")
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(x509.load_der_x509_certificate(ca.ark).subject)
        .last_update(dt.datetime(2025, 1, 1))
        .next_update(dt.datetime(2030, 1, 1))
    )
    crl = builder.sign(signer, hashes.SHA384(), rsa_padding=snpkit.PSS)  # type: ignore[arg-type]
    return crl.public_bytes(serialization.Encoding.DER)


def test_fetch_crl_checks_the_ark_signature(tmp_path: Path) -> None:
    ca = snpkit.make_ca("Milan")
    served = {"crl": _crl(ca.ark_key)}

    def transport(url: str, timeout: float) -> bytes:
        assert url == "https://kdsintf.amd.com/vcek/v1/Milan/crl"
        return served["crl"]

    client = KdsClient(cache_dir=None, transport=transport, roots=_fake_roots)
    assert client.fetch_crl("milan").data == served["crl"]
    served["crl"] = _crl(ca.ask_key)
    with pytest.raises(VerificationError, match="not signed by AMD's Milan ARK"):
        client.fetch_crl("milan")
    served["crl"] = b"\x30\x03\x02\x01\x00"
    with pytest.raises(FormatError, match="DER CRL"):
        client.fetch_crl("milan")
    # the real AMD ARK did not sign a test CRL
    with pytest.raises(VerificationError):
        KdsClient(transport=lambda u, t: _crl(ca.ark_key)).fetch_crl("milan")


def test_fetch_real_turin_vcek_by_turin_rules(
    kds_server: tuple[str, Path, list[str]], tmp_path: Path
) -> None:
    base, root, requests = kds_server
    (root / "vcek/v1/Turin/1e550a8ee5cf9f4d").write_bytes(snpkit.data("virtee_turin_vcek.der"))
    client = KdsClient(base_url=base, cache_dir=tmp_path / "cache")
    chip = bytes.fromhex("1e550a8ee5cf9f4d") + bytes(56)
    tcb = TcbVersion.from_parts(fmc=0, bootloader=0, tee=0, snp=0, microcode=9, turin=True)
    fetched = client.fetch_vcek("turin", chip, tcb)  # checked against the built-in SEV-Turin ASK
    assert requests == ["/vcek/v1/Turin/1e550a8ee5cf9f4d?fmcSPL=0&blSPL=0&teeSPL=0&snpSPL=0&ucodeSPL=9"]
    assert fetched.path is not None
    assert fetched.path.relative_to(tmp_path / "cache").parts[:3] == ("vcek", "v1", "Turin")
    with pytest.raises(VerificationError, match="for TCB"):
        client.fetch_vcek(
            "turin", chip, TcbVersion.from_parts(fmc=1, bootloader=0, tee=0, snp=0, microcode=9, turin=True)
        )
