"""SEV over QMP with the real qemu.qmp client against a FAKE QMP server (no SEV hardware here)."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest
from qemu.qmp.legacy import QEMUMonitorProtocol
from tests.fakes.fakeqmp import FakeQmpServer

from sevbox.errors import FormatError, VmError
from sevbox.qemu import sevqmp

MEASURE = bytes(range(48))
SEV_INFO = {"enabled": True, "api-major": 1, "api-minor": 55, "build-id": 21, "policy": 5,
            "state": "launch-secret", "handle": 1, "sev-type": "sev"}  # fmt: skip


@pytest.fixture
def qmp() -> Iterator[tuple[FakeQmpServer, QEMUMonitorProtocol]]:
    server = FakeQmpServer(
        {
            "query-sev": SEV_INFO,
            "query-sev-launch-measure": {"data": base64.b64encode(MEASURE).decode()},
            "sev-inject-launch-secret": {},
        },
        errors={"query-sev-capabilities": "SEV: Failed to open /dev/sev: No such file or directory"},
    )
    client = QEMUMonitorProtocol(server.client_sock)
    client.connect()
    yield server, client
    client.close()
    server.close()


def test_query_sev_and_measure(qmp: tuple[FakeQmpServer, QEMUMonitorProtocol]) -> None:
    _, client = qmp
    ex = sevqmp.legacy_execute(client)
    info = sevqmp.query_sev(ex)
    assert (info.api_major, info.api_minor, info.build_id, info.policy, info.state) == (
        1,
        55,
        21,
        5,
        "launch-secret",
    )
    assert sevqmp.query_sev_launch_measure(ex) == MEASURE


def test_inject_sends_base64_header_and_payload(qmp: tuple[FakeQmpServer, QEMUMonitorProtocol]) -> None:
    server, client = qmp
    sevqmp.inject_launch_secret(sevqmp.legacy_execute(client), header=b"h" * 52, payload=b"p" * 32)
    sent = server.received[-1]
    assert sent["execute"] == "sev-inject-launch-secret"
    assert base64.b64decode(sent["arguments"]["packet-header"]) == b"h" * 52
    assert base64.b64decode(sent["arguments"]["secret"]) == b"p" * 32
    with pytest.raises(FormatError, match="52"):
        sevqmp.inject_launch_secret(sevqmp.legacy_execute(client), header=b"h" * 51, payload=b"p" * 32)


def test_qemu_errors_surface_with_its_words(qmp: tuple[FakeQmpServer, QEMUMonitorProtocol]) -> None:
    _, client = qmp
    with pytest.raises(VmError, match="Failed to open /dev/sev"):
        sevqmp.query_sev_capabilities(sevqmp.legacy_execute(client))


@pytest.mark.parametrize(
    "reply",
    [
        [],
        {"enabled": True},
        {**SEV_INFO, "sev-type": "tdx"},
        {**SEV_INFO, "policy": -1},
        {**SEV_INFO, "api-major": "1"},
    ],
)
def test_malformed_query_sev_is_a_format_error(reply: object) -> None:
    with pytest.raises(FormatError):
        sevqmp.query_sev(lambda _c, _a: reply)


@pytest.mark.parametrize("data", ["!!!", base64.b64encode(b"x" * 47).decode(), 5])
def test_malformed_measurement(data: object) -> None:
    with pytest.raises(FormatError):
        sevqmp.query_sev_launch_measure(lambda _c, _a: {"data": data})
