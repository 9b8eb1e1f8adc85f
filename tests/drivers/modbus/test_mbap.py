"""The MBAP framer: what the client writes the emulator reads, and back; broken headers are refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.modbus import client as client_mod
from drivers.modbus import emulator as emulator_mod
from drivers.modbus.mbap import HEADER_LEN, MbapFramer
from kernel.errors import FrameError


@given(st.integers(0, 0xFFFF), st.integers(0, 255), st.binary(min_size=1, max_size=253))
def test_frame_and_header_round_trip(tid: int, unit: int, pdu: bytes) -> None:
    frame = MbapFramer.frame(tid, unit, pdu)
    h = MbapFramer.header(frame[:HEADER_LEN])
    assert (h.tid, h.unit, h.protocol) == (tid, unit, 0)
    assert frame[HEADER_LEN : HEADER_LEN + h.pdu_len] == pdu
    assert len(frame) == HEADER_LEN + h.pdu_len


@given(st.binary(min_size=HEADER_LEN, max_size=HEADER_LEN))
def test_any_header_is_decoded_or_refused_with_a_frame_error(head: bytes) -> None:
    try:
        h = MbapFramer.header(head)
    except FrameError:
        return
    assert h.protocol == 0
    assert 1 <= h.pdu_len <= 253


def test_strict_refuses_a_foreign_protocol_and_the_emulator_may_build_one() -> None:
    with pytest.raises(FrameError, match="bad MBAP header"):
        MbapFramer.header(MbapFramer.frame(1, 1, b"\x03\x00\x00\x00\x01", protocol=7)[:HEADER_LEN])


def test_transaction_ids_wrap() -> None:
    f = MbapFramer()
    f._tid = 0xFFFE
    assert [f.next_tid(), f.next_tid(), f.next_tid()] == [0xFFFF, 0, 1]


def test_client_and_emulator_share_the_framer() -> None:
    # One framer: neither module packs MBAP headers by hand any more.
    import inspect

    for mod in (client_mod, emulator_mod):
        assert "MbapFramer" in inspect.getsource(mod)
        assert '">HHHB"' not in inspect.getsource(mod)
