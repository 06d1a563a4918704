"""The record of committed device frames: what it remembers, what it forgets (safely), and that
nothing counts as committed before its commit. Plus the ingest rule that keeps a frame whole in
the batch that marks it."""

from __future__ import annotations

from gateway.app import _whole_frames
from gateway.marks import MAX_BOOTS, MAX_DEVICES, MAX_RUNS, WINDOW, FrameMarks, Mark
from gateway.readings import Reading


def marks(seqs: range | list[int], boot: int = 7, device: str = "n1") -> list[Mark]:
    return [("a1", device, boot, s) for s in seqs]


def commit(fm: FrameMarks, ms: list[Mark], stamp: int = 1) -> None:
    fm.apply(fm.plan(ms, stamp))


def test_nothing_counts_before_the_commit_applies() -> None:
    fm = FrameMarks()
    update = fm.plan(marks(range(1, 11)), 10)
    assert update is not None and not fm.committed("a1", "n1", 7, 5)  # the commit may fail
    fm.apply(update)
    assert all(fm.committed("a1", "n1", 7, s) for s in range(1, 11))
    assert not fm.committed("a1", "n1", 7, 11) and not fm.committed("a1", "n1", 7, 0)
    assert not fm.committed("a1", "n1", 8, 5)  # another boot of the node: other frames
    assert fm.committed("a1", "n1", None, 5) and not fm.committed("a1", "n1", None, 11)  # any
    assert not fm.committed("a1", "n2", 7, 5) and not fm.committed("a2", "n1", 7, 5)
    assert fm.plan([], 11) is None


def test_frames_in_order_make_one_run_and_holes_stay_holes() -> None:
    fm = FrameMarks()
    for first in range(1, 100, 10):
        commit(fm, marks(range(first, first + 10)))
    assert fm.boots("a1", "n1") == ((7, ((1, 100),)),)
    commit(fm, marks([103, 105, 104, 110]))
    assert fm.boots("a1", "n1") == ((7, ((1, 100), (103, 105), (110, 110))),)
    assert not fm.committed("a1", "n1", 7, 101) and not fm.committed("a1", "n1", 7, 109)
    commit(fm, marks([101, 102, 106, 107, 108, 109]))  # resent, filling the holes
    assert fm.boots("a1", "n1") == ((7, ((1, 110),)),)


def test_bounded_window_runs_boots_and_devices() -> None:
    fm = FrameMarks()
    commit(fm, marks(range(1, WINDOW + 1001)))
    ((_boot, runs),) = fm.boots("a1", "n1")
    assert runs == ((1001, WINDOW + 1000),)  # seqs far below the newest are forgotten
    assert not fm.committed("a1", "n1", 7, 1000) and fm.committed("a1", "n1", 7, 1001)

    fm = FrameMarks()
    commit(fm, marks(range(1, 4 * MAX_RUNS, 2)))  # every other frame: one run each
    ((_boot, runs),) = fm.boots("a1", "n1")
    assert len(runs) == MAX_RUNS and runs[-1] == (4 * MAX_RUNS - 1,) * 2  # the newest kept

    fm = FrameMarks()
    for boot in range(1, MAX_BOOTS + 3):
        commit(fm, marks([1, 2], boot=boot))
    assert [b for b, _runs in fm.boots("a1", "n1")] == list(range(3, MAX_BOOTS + 3))

    fm = FrameMarks()
    for i in range(MAX_DEVICES):
        commit(fm, marks([1], device=f"n{i}"), stamp=i)
    commit(fm, marks([2], device="n0"), stamp=MAX_DEVICES)  # n0 is recent again
    update = fm.plan(marks([1], device="new"), MAX_DEVICES + 1)
    assert update is not None and update.forgotten == (("a1", "n1"),)  # the least recent
    fm.apply(update)
    assert len(fm) == MAX_DEVICES and fm.committed("a1", "n0", 7, 2)
    assert not fm.committed("a1", "n1", 7, 1) and fm.committed("a1", "new", 7, 1)


def test_rows_load_back_and_a_bad_row_is_forgotten() -> None:
    fm = FrameMarks()
    table: dict[tuple[str, str], tuple[str, str, str, int]] = {}  # what the store would hold
    for ms, stamp in (
        (marks(range(1, 50)), 1),
        (marks([60], boot=9), 2),
        (marks([3], device="n2"), 3),
    ):
        update = fm.plan(ms, stamp)
        assert update is not None
        fm.apply(update)
        table.update({(a, d): (a, d, boots, st) for a, d, boots, st in update.rows()})
    again = FrameMarks()
    assert again.load([*table.values(), ("a1", "n3", "not json", 4)]) == 1
    assert again.boots("a1", "n1") == fm.boots("a1", "n1") == ((7, ((1, 49),)), (9, ((60, 60),)))
    assert again.committed("a1", "n2", 7, 3) and not again.committed("a1", "n3", 7, 1)


def frame(asset: str, seq: int, n: int, boot: int | None = 5) -> list[Reading]:
    return [Reading(asset, f"q{i}", float(i), "C62", 1.0, device="n", seq=seq, boot=boot)
            for i in range(n)]  # fmt: skip


def test_a_cut_batch_keeps_each_devices_last_frame_for_the_next() -> None:
    a1, a2, b1 = frame("a", 1, 3), frame("a", 2, 2), frame("b", 8, 4)
    plain = frame("c", 0, 3, boot=None)  # a source without frames to mark: never held back
    batch = [*a1, *b1[:2], *plain, *a2, *b1[2:]]
    now, later = _whole_frames(batch)
    assert now == [*a1, *plain] and later == [*b1[:2], *a2, *b1[2:]]
    assert _whole_frames(a1) == (a1, [])  # one frame only: committed, not held back forever
    assert _whole_frames(plain) == (plain, [])
