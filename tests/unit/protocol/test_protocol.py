"""The host<->agent wire format: round trips, framing, and rejection of everything malformed."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sevbox import protocol as P


def _proc(**kw: object) -> P.ProcessSpec:
    base: dict[str, object] = {
        "args": ("sh", "-c", "echo hi"),
        "env": ("PATH=/bin", "A=b=c"),
        "cwd": "/tmp",
        "uid": 1000,
        "gid": 100,
        "additional_gids": (5, 6),
        "terminal": True,
        "console_size": (24, 80),
        "rlimits": (P.Rlimit("RLIMIT_NOFILE", 1024, 512),),
        "no_new_privileges": True,
        "capabilities": {"bounding": ("CAP_KILL",), "effective": ("CAP_KILL",)},
        "umask": 0o22,
    }
    base.update(kw)
    return P.ProcessSpec(**base)  # type: ignore[arg-type]


MESSAGES = [
    P.CreateContainer(
        P.ContainerSpec(
            process=_proc(),
            hostname="box",
            readonly=True,
            mounts=(P.Mount("/proc", "proc", "proc", ("nosuid",)),),
            masked_paths=("/proc/kcore",),
            readonly_paths=("/proc/sys",),
            sysctl={"net.ipv4.ip_forward": "1"},
        )
    ),
    P.StartContainer(),
    P.ExecProcess("e1", _proc(terminal=False, console_size=None, capabilities=None, umask=None)),
    P.SignalProcess("", 9),
    P.WaitProcess("e1"),
    P.CloseStdin(""),
    P.ResizeTty("e1", 50, 132),
    P.ListProcesses(),
    P.Shutdown(),
    P.Ping(),
]


def _roundtrip(kind: int, msg: P._Message) -> P._Message:
    frames = P.Decoder().feed(P.encode_message(kind, 42, msg))
    assert len(frames) == 1
    k, rid, payload = frames[0]
    assert (k, rid) == (kind, 42)
    if kind == P.Kind.REQUEST:
        return P.decode_request(payload)
    if kind == P.Kind.EVENT:
        return P.decode_event(payload)
    return P.decode_response(payload)


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: m.TYPE)
def test_every_request_round_trips(msg: P._Message) -> None:
    back = _roundtrip(P.Kind.REQUEST, msg)
    assert type(back) is type(msg)
    assert back.to_obj() == msg.to_obj()


def test_create_container_fields_survive() -> None:
    back = _roundtrip(P.Kind.REQUEST, MESSAGES[0])
    assert isinstance(back, P.CreateContainer)
    c = back.container
    assert c.process.args == ("sh", "-c", "echo hi")
    assert c.process.additional_gids == (5, 6)
    assert c.process.rlimits[0].type == "RLIMIT_NOFILE" and c.process.rlimits[0].soft == 512
    assert c.process.console_size == (24, 80)
    assert c.process.capabilities == {"bounding": ("CAP_KILL",), "effective": ("CAP_KILL",)}
    assert c.mounts[0].options == ("nosuid",)
    assert c.sysctl == {"net.ipv4.ip_forward": "1"}
    assert c.readonly is True and c.hostname == "box"


@pytest.mark.parametrize(
    "msg",
    [P.Ready(1, {"init": 0.9, "ready": 1.5}), P.Exited("", 137), P.Rejected("bad magic")],
    ids=lambda m: m.TYPE,
)
def test_events_round_trip(msg: P._Message) -> None:
    assert _roundtrip(P.Kind.EVENT, msg) == msg


def test_response_round_trips() -> None:
    r = P.Response(False, "no such file", pids=(3, 4), status=127)
    back = _roundtrip(P.Kind.RESPONSE, r)
    assert back == r
    assert isinstance(back, P.Response) and back.status == 127 and back.pids == (3, 4)


def test_data_frames_are_binary_safe() -> None:
    blob = bytes(range(256)) * 10
    [(kind, _, payload)] = P.Decoder().feed(P.encode_data(P.Kind.STDOUT, "exec-1", blob))
    assert kind == P.Kind.STDOUT
    assert P.decode_data(payload) == ("exec-1", blob)


@given(st.binary(max_size=3000), st.lists(st.integers(1, 50), max_size=40))
@settings(max_examples=100)
def test_decoder_reassembles_any_chunking(blob: bytes, cuts: list[int]) -> None:
    stream = P.encode_data(P.Kind.STDIN, "x", blob) + P.encode_message(P.Kind.REQUEST, 7, P.Ping())
    dec = P.Decoder()
    got: list[tuple[int, int, bytes]] = []
    pos = 0
    for c in cuts:
        got += dec.feed(stream[pos : pos + c])
        pos += c
    got += dec.feed(stream[pos:])
    assert [g[0] for g in got] == [P.Kind.STDIN, P.Kind.REQUEST]
    assert P.decode_data(got[0][2]) == ("x", blob)
    assert isinstance(P.decode_request(got[1][2]), P.Ping)
    assert dec.pending == 0


def test_bad_magic_is_rejected_then_decoder_resyncs() -> None:
    dec = P.Decoder()
    good = P.encode_message(P.Kind.REQUEST, 1, P.Ping())
    with pytest.raises(P.ProtocolError, match="magic"):
        dec.feed(b"garbage!!garbage" + good)
    [(kind, rid, _)] = dec.feed(b"")
    assert (kind, rid) == (P.Kind.REQUEST, 1)


@pytest.mark.parametrize(
    ("header", "match"),
    [
        (P.HEADER.pack(b"SB", 9, 1, 0, 0), "version"),
        (P.HEADER.pack(b"SB", P.VERSION, 77, 0, 0), "kind"),
        (P.HEADER.pack(b"SB", P.VERSION, 1, 0, P.MAX_PAYLOAD + 1), "exceeds"),
    ],
)
def test_bad_headers(header: bytes, match: str) -> None:
    with pytest.raises(P.ProtocolError, match=match):
        P.Decoder().feed(header)


def test_oversized_payload_cannot_be_framed() -> None:
    with pytest.raises(P.ProtocolError, match="exceeds"):
        P.frame(P.Kind.STDOUT, 0, b"x" * (P.MAX_PAYLOAD + 1))


def _req(obj: object) -> bytes:
    return json.dumps(obj).encode()


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (b"\xff\xfe", "UTF-8 JSON"),
        (b"[1, 2]", "not a JSON object"),
        (_req({"type": "FormatDisk"}), "unknown request type"),
        (_req({"type": "Ping", "extra": 1}), "unknown field 'extra'"),
        (_req({"type": "SignalProcess", "exec_id": ""}), "missing field 'signal'"),
        (_req({"type": "SignalProcess", "exec_id": "", "signal": 0}), "out of range"),
        (_req({"type": "SignalProcess", "exec_id": "", "signal": True}), "integer"),
        (_req({"type": "SignalProcess", "exec_id": "../x", "signal": 9}), "characters outside"),
        (_req({"type": "ResizeTty", "exec_id": "a", "rows": -1, "cols": 2}), "out of range"),
        (_req({"type": "ExecProcess", "exec_id": "", "process": {}}), "empty"),
        (_req({"type": "ExecProcess", "exec_id": "e", "process": {"args": []}}), "must name a program"),
        (
            _req({"type": "ExecProcess", "exec_id": "e", "process": {"args": ["x"], "env": ["NOEQ"]}}),
            "NAME=VALUE",
        ),
        (
            _req(
                {"type": "ExecProcess", "exec_id": "e", "process": {"args": ["x"], "env": [], "cwd": "rel"}}
            ),
            "absolute",
        ),
        (b"[" * 100000, "UTF-8 JSON"),
    ],
)
def test_malformed_requests_are_rejected(payload: bytes, match: str) -> None:
    with pytest.raises(P.ProtocolError, match=match):
        P.decode_request(payload)


def test_bad_container_specs() -> None:
    proc = _proc().to_obj()
    bad = [
        (
            {"process": proc, "mounts": [{"destination": "/x", "type": "nfs", "source": "s"}]},
            "unsupported mount",
        ),
        ({"process": proc, "sysctl": {"../etc": "1"}}, "bad key"),
        (
            {"process": {**proc, "rlimits": [{"type": "RLIMIT_BOGUS", "hard": 1, "soft": 1}]}},
            "unknown rlimit",
        ),
        ({"process": {**proc, "capabilities": {"bounding": ["KILL"]}}}, "not a capability"),
        ({"process": {**proc, "args": ["a\0b"]}}, "NUL"),
        ({"process": proc, "hostname": "h" * 65}, "longer than 64"),
    ]
    for container, match in bad:
        with pytest.raises(P.ProtocolError, match=match):
            P.decode_request(_req({"type": "CreateContainer", "container": container}))


@given(st.binary(max_size=400))
@settings(max_examples=200)
def test_garbage_payloads_raise_only_protocol_error(blob: bytes) -> None:
    for decode in (P.decode_request, P.decode_event, P.decode_response, P.decode_data):
        try:
            decode(blob)
        except P.ProtocolError:
            pass


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=5),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=4),
        max_leaves=20,
    )
)
@settings(max_examples=200)
def test_arbitrary_json_in_a_create_raises_only_protocol_error(value: object) -> None:
    for obj in (
        {"type": "CreateContainer", "container": value},
        {"type": "ExecProcess", "exec_id": "e", "process": value},
    ):
        try:
            P.decode_request(_req(obj))
        except P.ProtocolError:
            pass


@given(st.binary(max_size=2000))
@settings(max_examples=200)
def test_decoder_never_crashes_on_garbage(blob: bytes) -> None:
    dec = P.Decoder()
    for _ in range(3):
        try:
            dec.feed(blob)
            break
        except P.ProtocolError:
            blob = b""


def test_data_header_plus_data_is_the_data_frame() -> None:
    data = bytes(range(200)) * 5
    assert P.data_header(P.Kind.STDERR, "e-1", len(data)) + data == P.encode_data(P.Kind.STDERR, "e-1", data)
    with pytest.raises(P.ProtocolError, match="exceeds"):
        P.data_header(P.Kind.STDOUT, "", P.MAX_DATA + 1)
    with pytest.raises(P.ProtocolError, match="no stream data"):
        P.data_header(P.Kind.REQUEST, "", 1)
