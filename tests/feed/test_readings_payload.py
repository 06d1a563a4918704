"""The uplink's spliced readings message is the feed's readings message, whether its rows come
as one string or as one piece per stored batch."""

from __future__ import annotations

import json

from gateway.sync import messages


def test_pieces_make_the_same_message_as_rows() -> None:
    rows = [
        [1, "wq-1", "temperature", 12.5, "CEL", 1.0, 1.1, "good", None],
        [2, "wq-1", "turbidity", None, "NTU", 1.0, 1.1, "suspect", 0.93],
        [3, "café-2", "level", 0.5, "M", 2.0, 2.1, "good", 0.1],
    ]
    pieces = [json.dumps(rows[:2], ensure_ascii=False)[1:-1], json.dumps(rows[2:])[1:-1]]
    whole = ",".join(pieces)
    built = messages.dumps(messages.readings_batch("gw", "s1", 5.0, rows, True))
    for form in (whole, pieces, pieces[:1] + pieces[1:]):
        raw = messages.readings_payload("gw", "s1", 5.0, 1, 3, form, True)
        assert json.loads(raw) == json.loads(built)
    assert messages.readings_payload("gw", "s1", 5.0, 1, 3, pieces, True) == (
        messages.readings_payload("gw", "s1", 5.0, 1, 3, whole, True)
    )
