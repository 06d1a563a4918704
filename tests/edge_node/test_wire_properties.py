"""Property-based tests of the frame decoder and the gateway's sequence bookkeeping (CPython)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from edge_node import protocol as P
from gateway.sources.serial import NodeState

# at most 6 characters: 24 bytes of UTF-8, the protocol's limit for a name
names = st.text(st.characters(codec="utf-8"), min_size=1, max_size=6)
floats32 = st.floats(width=32, allow_nan=False)
readings = st.fixed_dictionaries(
    {
        "type": st.just("readings"),
        "node": names,
        "seq": st.integers(0, 2**32 - 1),
        "time": st.none() | st.integers(0, 2**32 - 1).map(lambda s: s + 0.5),
        "values": st.lists(st.tuples(names, floats32).map(list), max_size=6),
    }
)


@given(st.binary(max_size=600))
@settings(max_examples=400)
def test_arbitrary_bytes_never_crash_the_decoder(data: bytes) -> None:
    sp = P.FrameSplitter()
    for frame in sp.feed(data):
        try:
            msg = P.decode(frame)
        except P.ProtocolError as e:
            assert e.reason
        else:
            assert msg["type"] in P.TYPE_CODES


@given(readings, st.binary(max_size=80), st.integers(0, 79))
@settings(max_examples=200)
def test_frames_survive_garbage_before_them(msg: dict, garbage: bytes, cut: int) -> None:  # type: ignore[type-arg]
    frame = P.encode(msg)
    assert P.decode(frame[1:-1]) == msg
    sp = P.FrameSplitter()
    got = sp.feed(garbage[:cut]) + sp.feed(garbage[cut:] + frame)
    decoded = []
    for f in got:
        try:
            decoded.append(P.decode(f))
        except P.ProtocolError:
            pass
    assert decoded[-1] == msg


@given(st.lists(st.integers(1, 60), max_size=200))
def test_each_sequence_number_is_accepted_once(seqs: list[int]) -> None:
    state = NodeState(boot=1)
    accepted = [s for s in seqs if state.accept(s, 0.0)[0]]
    assert sorted(accepted) == sorted(set(seqs))
    # what is still missing is never something that arrived, and lies below the highest seq
    assert set(state.pending).isdisjoint(accepted)
    assert all(s < state.high for s in state.pending)


def test_missing_seq_waits_for_a_resend_then_counts_as_gap() -> None:
    state = NodeState(boot=1)
    assert state.accept(10, 0.0) == (True, 0)
    assert state.accept(13, 1.0) == (True, 0)
    assert list(state.pending) == [11, 12]
    assert state.accept(11, 2.0) == (True, 0)  # a resend fills the hole
    assert list(state.pending) == [12]
    assert state.expire(20.0, 30.0) == 0
    assert state.expire(31.5, 30.0) == 1  # 12 never came
    assert not state.pending
    assert state.accept(12, 40.0) == (False, 0)  # too late: it was already counted lost


def test_resends_older_than_the_first_seq_heard_are_accepted_once() -> None:
    state = NodeState(boot=None)  # the gateway restarted and hears seq 50 first
    assert state.accept(50, 0.0)[0]
    assert state.accept(48, 0.0)[0] and state.accept(49, 0.0)[0]
    assert not state.accept(48, 0.0)[0]
