"""GHCB MSR protocol and GHCB page codec (AMD #56421; Linux sev-common.h / svm.h layouts)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sevbox.errors import FormatError
from sevbox.sev import ghcb
from sevbox.sev.ghcb import (
    GHCB_SIZE,
    NAE_EVENTS,
    SAVE_FIELDS,
    CpuidRequest,
    CpuidResponse,
    Ghcb,
    HvFeaturesResponse,
    PageStateChangeRequest,
    PreferredGpaResponse,
    RegisterGpaRequest,
    RunVmplRequest,
    SevInfoResponse,
    TerminationRequest,
    UnknownMsr,
    check_page,
    decode_msr,
)

U64 = st.integers(min_value=0, max_value=(1 << 64) - 1)


# --- MSR protocol: values built the way Linux's macros build them --------------------------------


def linux_sev_info(max_: int, min_: int, cbit: int) -> int:  # GHCB_MSR_SEV_INFO
    return (max_ & 0xFFFF) << 48 | (min_ & 0xFFFF) << 32 | (cbit & 0xFF) << 24 | 0x001


def linux_cpuid_req(fn: int, reg: int) -> int:  # GHCB_CPUID_REQ
    return 0x004 | (reg & 3) << 30 | fn << 32


def linux_psc_req(gfn: int, op: int) -> int:  # GHCB_MSR_PSC_REQ_GFN
    return (op & 0xF) << 52 | (gfn & ((1 << 40) - 1)) << 12 | 0x014


def linux_term(reason_set: int, reason: int) -> int:  # GHCB_MSR_TERM_REQ | GHCB_SEV_TERM_REASON
    return 0x100 | (reason_set & 0xF) << 12 | (reason & 0xFF) << 16


def test_sev_info_response_matches_linux_layout() -> None:
    value = linux_sev_info(2, 1, 51)
    assert value == 0x0002_0001_3300_0001
    msg = decode_msr(value)
    assert msg == SevInfoResponse(max_protocol=2, min_protocol=1, cbit=51)
    assert msg.encode() == value
    assert ("C-bit", "position 51") in msg.explain()


def test_cpuid_request_and_response() -> None:
    value = linux_cpuid_req(0x8000_001F, 1)
    msg = decode_msr(value)
    assert isinstance(msg, CpuidRequest)
    assert (msg.function, msg.register) == (0x8000_001F, 1)
    assert ("register", "EBX") in msg.explain()
    resp = CpuidResponse(value=0x0001_B40F, register=1)
    assert resp.encode() == 0x0001_B40F << 32 | 1 << 30 | 0x005
    assert decode_msr(resp.encode()) == resp


def test_page_state_change_request() -> None:
    value = linux_psc_req(0x12345, 2)
    msg = decode_msr(value)
    assert msg == PageStateChangeRequest(gfn=0x12345, operation=2)
    assert any("shared" in text for _, text in msg.explain())
    bad_op = decode_msr(linux_psc_req(1, 7))
    assert any(label == "WARNING" for label, _ in bad_op.explain())


def test_termination_request_reasons() -> None:
    msg = decode_msr(linux_term(1, 3))
    assert isinstance(msg, TerminationRequest)
    assert msg.encode() == 0x31100
    assert "VMPL 0" in msg.reason
    assert decode_msr(linux_term(0, 1)).reason.startswith("SEV-ES / GHCB protocol range")  # type: ignore[attr-defined]
    assert decode_msr(linux_term(5, 9)).reason == "unknown reason code"  # type: ignore[attr-defined]


def test_gpa_messages() -> None:
    assert RegisterGpaRequest(gfn=0x7F).encode() == 0x7F012
    none = decode_msr(0xFFFF_FFFF_FFFF_F011)
    assert isinstance(none, PreferredGpaResponse)
    assert "no preference" in none.explain()[1][1]
    page = decode_msr(0x1234_5000)
    assert isinstance(page, ghcb.GhcbGpa)
    assert page.gpa == 0x1234_5000


def test_run_vmpl_and_hv_features() -> None:
    assert RunVmplRequest(vmpl=2).encode() == 0x0000_0002_0000_0016
    feats = decode_msr((1 << 0 | 1 << 1 | 1 << 5) << 12 | 0x081)
    assert isinstance(feats, HvFeaturesResponse)
    assert feats.feature_names() == ["SEV-SNP", "SEV-SNP AP creation", "SEV-SNP multiple VMPL levels"]
    assert decode_msr(0x1006).explain()[0][1].startswith("0x006 AP reset hold request")


def test_reserved_bits_are_kept_and_flagged() -> None:
    value = linux_sev_info(1, 1, 47) | 0x5 << 12  # bits 23:12 are reserved
    msg = decode_msr(value)
    assert msg.reserved == 0x5000  # type: ignore[attr-defined]
    assert msg.encode() == value
    assert any(label == "WARNING" and "reserved" in text for label, text in msg.explain())


def test_unknown_info_code() -> None:
    msg = decode_msr(0xABC_DEF0_0FFF)
    assert isinstance(msg, UnknownMsr)
    assert (msg.info, msg.data) == (0xFFF, 0xABC_DEF0_0)
    assert msg.to_json()["kind"] == "UnknownMsr"


@pytest.mark.parametrize("value", [-1, 1 << 64, True, "0x1", 1.0])
def test_decode_rejects_non_u64(value: object) -> None:
    with pytest.raises(FormatError):
        decode_msr(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "make",
    [
        lambda: CpuidRequest(function=1 << 32),
        lambda: CpuidRequest(register=4),
        lambda: PageStateChangeRequest(gfn=1 << 40),
        lambda: TerminationRequest(reason_set=16),
        lambda: SevInfoResponse(cbit=-1),
        lambda: SevInfoResponse(reserved=1),  # bit 0 is GHCBInfo, not reserved
        lambda: RunVmplRequest(vmpl=True),
    ],
)
def test_fields_out_of_range_are_format_errors(make: object) -> None:
    with pytest.raises(FormatError):
        make()  # type: ignore[operator]


@given(U64)
def test_any_u64_round_trips(value: int) -> None:
    assert decode_msr(value).encode() == value


@settings(max_examples=100)
@given(
    st.sampled_from(sorted(ghcb._MSR_TYPES.values(), key=lambda c: c.CODE)),
    st.data(),
)
def test_messages_round_trip_through_the_codec(cls: type[ghcb.MsrMessage], data: st.DataObject) -> None:
    kwargs = {
        name: data.draw(st.integers(0, (1 << (hi - lo + 1)) - 1), label=name) for name, lo, hi in cls.FIELDS
    }
    msg = cls(**kwargs)
    value = msg.encode()
    assert value & 0xFFF == cls.CODE
    assert decode_msr(value) == msg
    assert msg.to_json()["fields"] == kwargs


def test_every_message_type_documents_its_direction() -> None:
    for cls in ghcb._MSR_TYPES.values():
        assert cls.DIRECTION in ("guest", "hypervisor"), cls
        assert cls.NAME


# --- GHCB page --------------------------------------------------------------------------------


def test_layout_matches_linux_struct_ghcb() -> None:
    # struct ghcb_save_area offsets (reserved_0x... names give them away) and struct ghcb.
    assert SAVE_FIELDS["cpl"] == (0xCB, 1)
    assert SAVE_FIELDS["rax"][0] == 0x1F8
    assert SAVE_FIELDS["rcx"][0] == 0x308
    assert SAVE_FIELDS["sw_exit_code"][0] == 0x390
    assert SAVE_FIELDS["xcr0"][0] == 0x3E8
    assert ghcb.VALID_BITMAP_OFFSET == 0x3F0
    assert ghcb.SHARED_BUFFER_OFFSET + ghcb.SHARED_BUFFER_SIZE == 0xFF0
    assert ghcb.PROTOCOL_VERSION_OFFSET == 0xFFA
    assert ghcb.USAGE_OFFSET + 4 == GHCB_SIZE


def test_build_sets_fields_and_valid_bits() -> None:
    page = Ghcb.build(valid={"rax": 0xD, "rcx": 0, "sw_exit_code": 0x72}, shared_buffer=b"hi")
    raw = page.encode()
    assert len(raw) == GHCB_SIZE
    assert struct.unpack_from("<Q", raw, 0x1F8)[0] == 0xD
    assert struct.unpack_from("<Q", raw, 0x390)[0] == 0x72
    bitmap = int.from_bytes(raw[0x3F0:0x400], "little")
    assert bitmap == 1 << (0x1F8 // 8) | 1 << (0x308 // 8) | 1 << (0x390 // 8)
    assert raw[0x800:0x802] == b"hi"
    assert struct.unpack_from("<H", raw, 0xFFA)[0] == 2
    back = Ghcb.decode(raw)
    assert back.valid_fields() == ["rax", "rcx", "sw_exit_code"]
    assert back == Ghcb.decode(back.encode())


@settings(max_examples=100)
@given(
    st.dictionaries(st.integers(0, GHCB_SIZE - 1), st.integers(1, 255), max_size=96),
    st.binary(max_size=64),
    st.integers(0, GHCB_SIZE - 64),
)
def test_any_page_round_trips(patches: dict[int, int], block: bytes, at: int) -> None:
    raw = bytearray(GHCB_SIZE)
    raw[at : at + len(block)] = block
    for offset, byte in patches.items():
        raw[offset] = byte
    assert Ghcb.decode(bytes(raw)).encode() == bytes(raw)


def test_a_full_random_page_round_trips() -> None:
    raw = bytes((i * 131 + 7) % 256 for i in range(GHCB_SIZE))
    assert Ghcb.decode(raw).encode() == raw


def test_reserved_bytes_are_kept_and_flagged() -> None:
    raw = bytearray(
        Ghcb.build(valid={"sw_exit_code": 0x89, "sw_exit_info_1": 0, "sw_exit_info_2": 0}).encode()
    )
    raw[0x10] = 0xAA  # inside reserved_0x0
    page = Ghcb.decode(bytes(raw))
    assert page.encode() == bytes(raw)
    assert any("reserved bytes" in f.message for f in check_page(page))


@pytest.mark.parametrize("size", [0, 4095, 4097, 8192])
def test_wrong_page_size(size: int) -> None:
    with pytest.raises(FormatError, match="4096"):
        Ghcb.decode(bytes(size))


def test_bad_page_fields_are_format_errors() -> None:
    with pytest.raises(FormatError):
        Ghcb(registers={"rax": 1 << 64})
    with pytest.raises(FormatError):
        Ghcb(registers={"nosuch": 1})
    with pytest.raises(FormatError):
        Ghcb(shared_buffer=b"short")
    with pytest.raises(FormatError):
        Ghcb(reserved={0x10: b"x"})
    with pytest.raises(FormatError):
        Ghcb.build(valid={"eax": 1})


# --- NAE events ---------------------------------------------------------------------------------

BASE = {"sw_exit_info_1": 0, "sw_exit_info_2": 0}


def errors(page: Ghcb, **kw: object) -> list[str]:
    return [f.message for f in check_page(page, **kw) if f.severity == "error"]  # type: ignore[arg-type]


def test_nae_table_names_real_fields() -> None:
    for code, event in NAE_EVENTS.items():
        assert code == event.code
        for need in (*event.inputs, *event.outputs):
            assert need.field in SAVE_FIELDS, (event.name, need.field)


def test_cpuid_needs_xcr0_only_for_leaf_0xd() -> None:
    leaf1 = Ghcb.build(valid={"sw_exit_code": 0x72, **BASE, "rax": 1, "rcx": 0})
    assert errors(leaf1) == []
    leaf_d = Ghcb.build(valid={"sw_exit_code": 0x72, **BASE, "rax": 0xD, "rcx": 0})
    assert len(errors(leaf_d)) == 1 and "XCR0" in errors(leaf_d)[0]
    with_xcr0 = Ghcb.build(valid={"sw_exit_code": 0x72, **BASE, "rax": 0xD, "rcx": 0, "xcr0": 7})
    assert errors(with_xcr0) == []
    no_rcx = Ghcb.build(valid={"sw_exit_code": 0x72, **BASE, "rax": 1})
    assert any("RCX" in e for e in errors(no_rcx))


def test_msr_read_and_write() -> None:
    read = Ghcb.build(valid={"sw_exit_code": 0x7C, **BASE, "rcx": 0xC001_0131})
    assert errors(read) == []
    write = Ghcb.build(valid={"sw_exit_code": 0x7C, **BASE, "sw_exit_info_1": 1, "rcx": 0x10, "rax": 5})
    assert [e for e in errors(write) if "RDX" in e]
    # the response of a read must carry RAX and RDX back
    resp = Ghcb.build(valid={"sw_exit_code": 0x7C, "sw_exit_info_1": 0, "sw_exit_info_2": 0, "rax": 1})
    assert any("RDX" in e for e in errors(resp, direction="response", request=read))
    assert not errors(resp, direction="response", request=write)


def test_ioio_out_needs_rax_and_string_needs_scratch() -> None:
    out = Ghcb.build(valid={"sw_exit_code": 0x7B, **BASE, "sw_exit_info_1": 0x3F8 << 16 | 0x10})
    assert any("RAX" in e for e in errors(out))
    string_in = Ghcb.build(valid={"sw_exit_code": 0x7B, **BASE, "sw_exit_info_1": 0x3F8 << 16 | 0x15})
    assert any("SW_SCRATCH" in e for e in errors(string_in))


def test_ap_creation_needs_rax_except_for_destroy() -> None:
    create = Ghcb.build(valid={"sw_exit_code": 0x8000_0013, **BASE, "sw_exit_info_1": 1})
    assert any("RAX" in e for e in errors(create))
    destroy = Ghcb.build(valid={"sw_exit_code": 0x8000_0013, **BASE, "sw_exit_info_1": 5 << 32 | 2})
    assert errors(destroy) == []


def test_every_event_needs_the_sw_exit_fields() -> None:
    page = Ghcb.build(valid={"sw_exit_code": 0x89})
    errs = errors(page)
    assert any("SW_EXIT_INFO_1" in e for e in errs) and any("SW_EXIT_INFO_2" in e for e in errs)


def test_unknown_exit_code_and_header_warnings() -> None:
    page = Ghcb.build(valid={"sw_exit_code": 0x1234, **BASE}, protocol_version=7, usage=1)
    found = check_page(page)
    assert any(f.severity == "error" and "0x1234" in f.message for f in found)
    warnings = [f.message for f in found if f.severity == "warning"]
    assert any("protocol version 7" in w for w in warnings)
    assert any("Hyper-V" in w for w in warnings)


def test_response_result_codes() -> None:
    rejected = Ghcb.build(valid={"sw_exit_code": 0x89, "sw_exit_info_1": 2, "sw_exit_info_2": 4})
    found = check_page(rejected, direction="response")
    assert any("missing input" in f.message for f in found)
    garbage = Ghcb.build(valid={"sw_exit_code": 0x89, "sw_exit_info_1": 9, "sw_exit_info_2": 0})
    assert any("not 0, 1 or 2" in e for e in errors(garbage, direction="response"))
    with pytest.raises(ValueError):
        check_page(garbage, direction="sideways")


def test_scratch_must_point_into_the_shared_buffer() -> None:
    gpa = 0x10_0000
    inside = Ghcb.build(valid={"sw_exit_code": 0x8000_0001, **BASE, "sw_scratch": gpa + 0x800})
    outside = Ghcb.build(valid={"sw_exit_code": 0x8000_0001, **BASE, "sw_scratch": gpa + 0x100})
    assert not [f for f in check_page(inside, ghcb_gpa=gpa) if "SW_SCRATCH" in f.message]
    assert [f for f in check_page(outside, ghcb_gpa=gpa) if "SW_SCRATCH" in f.message]


def test_explain_page_names_the_event() -> None:
    page = Ghcb.build(valid={"sw_exit_code": 0x6E, **BASE})
    lines = dict(ghcb.explain_page(page))
    assert lines["SW_EXITCODE"] == "0x6e (RDTSC)"
    assert lines["event returns"] == "RAX, RDX"
