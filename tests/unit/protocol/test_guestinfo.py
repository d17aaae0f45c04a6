"""GuestInfo: the canary/marker request and the Response.info it gets back, validated both ways."""

from __future__ import annotations

import json

import pytest

from sevbox import protocol as P


def test_round_trip() -> None:
    req = P.GuestInfo("00ff10")
    assert P.decode_request(json.dumps(req.to_obj()).encode()) == req
    resp = P.Response(True, info={"canary_inverted": "ab" * 32, "memory_encryption": "none reported"})
    assert P.decode_response(json.dumps(resp.to_obj()).encode()).info == resp.info
    assert "info" not in P.Response(True).to_obj()  # absent when empty: older peers see nothing new


@pytest.mark.parametrize(
    "obj",
    [
        {"type": "GuestInfo", "marker_inverted": "xyz0"},
        {"type": "GuestInfo", "marker_inverted": "abc"},
        {"type": "GuestInfo", "marker_inverted": "AB"},
        {"type": "GuestInfo", "marker_inverted": 5},
        {"type": "GuestInfo", "marker_inverted": "00" * 5000},
        {"type": "GuestInfo", "other": ""},
    ],
)
def test_bad_requests_rejected(obj: dict[str, object]) -> None:
    with pytest.raises(P.ProtocolError):
        P.decode_request(json.dumps(obj).encode())


@pytest.mark.parametrize(
    "info", [[], {"k": 1}, {str(i): "" for i in range(P.Response.MAX_INFO + 1)}, {"k": "x" * 20000}]
)
def test_bad_info_rejected(info: object) -> None:
    obj = {"type": "Response", "ok": True, "error": "", "pids": [], "status": None, "info": info}
    with pytest.raises(P.ProtocolError):
        P.decode_response(json.dumps(obj).encode())


def test_file_mounts_carry_base64_data_and_only_they_do() -> None:
    m = P.Mount("/etc/hosts", "file", "", ("ro",), data="aGk=")
    assert P.Mount.from_obj(m.to_obj(), "m").data == "aGk="
    with pytest.raises(P.ProtocolError, match="not base64"):
        P.Mount.from_obj({**m.to_obj(), "data": "!!"}, "m")
    with pytest.raises(P.ProtocolError, match="only a 'file' mount"):
        P.Mount.from_obj({"destination": "/x", "type": "tmpfs", "source": "tmpfs", "data": "aGk="}, "m")
    with pytest.raises(P.ProtocolError):
        P.Mount.from_obj({**m.to_obj(), "data": "A" * (P.Mount.MAX_FILE_DATA + 4)}, "m")


def test_9p_mounts_name_a_valid_tag() -> None:
    ok = {"destination": "/data", "type": "9p", "source": "vol0", "options": ["ro"]}
    assert P.Mount.from_obj(ok, "m").source == "vol0"
    for bad in ("", "a/b", "x" * 32, "vol 0"):
        with pytest.raises(P.ProtocolError, match="9p mount tag"):
            P.Mount.from_obj({**ok, "source": bad}, "m")
