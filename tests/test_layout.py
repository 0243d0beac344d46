"""Stream classification and the reserved ids (PROTOCOL.md §2)."""

from __future__ import annotations

import pytest

from quicdist.layout import (
    StreamKind,
    classify,
    dist_send_stream,
    first_user_stream,
    reserved_streams,
    urgency_of_kind,
)


@pytest.mark.parametrize("stream_id, kind", [
    (0, StreamKind.CONTROL),
    (4, StreamKind.DIST), (8, StreamKind.DIST), (12, StreamKind.DIST), (16, StreamKind.DIST),
    (1, StreamKind.DIST), (5, StreamKind.DIST), (9, StreamKind.DIST), (13, StreamKind.DIST),
    (20, StreamKind.USER), (24, StreamKind.USER), (4000, StreamKind.USER),
    (17, StreamKind.USER), (21, StreamKind.USER), (4001, StreamKind.USER),
    (2, StreamKind.INVALID), (3, StreamKind.INVALID), (18, StreamKind.INVALID),
    (19, StreamKind.INVALID),
])
def test_classify(stream_id, kind):
    assert classify(stream_id) is kind


def test_thresholds_follow_the_table_for_every_small_id():
    for stream_id in range(200):
        kind = classify(stream_id)
        if stream_id & 2:
            assert kind is StreamKind.INVALID
        elif stream_id == 0:
            assert kind is StreamKind.CONTROL
        elif stream_id & 1:
            assert kind is (StreamKind.USER if stream_id >= 17 else StreamKind.DIST)
        else:
            assert kind is (StreamKind.USER if stream_id >= 20 else StreamKind.DIST)


def test_reserved_streams_in_increasing_order():
    assert reserved_streams(True) == (0, 4, 8, 12, 16)
    assert reserved_streams(False) == (1, 5, 9, 13)
    for is_client in (True, False):
        ids = reserved_streams(is_client)
        assert list(ids) == sorted(ids)
        assert dist_send_stream(is_client) == ids[-1]
        assert first_user_stream(is_client) == ids[-1] + 4
        assert classify(first_user_stream(is_client)) is StreamKind.USER
        assert all(classify(i) is not StreamKind.USER for i in ids)


def test_urgencies():
    assert urgency_of_kind(StreamKind.CONTROL) == 0
    assert urgency_of_kind(StreamKind.DIST) == 1
    assert urgency_of_kind(StreamKind.USER, 16) == 16
    assert urgency_of_kind(StreamKind.USER) == 128
    for bad in (15, 256, 0):
        with pytest.raises(ValueError):
            urgency_of_kind(StreamKind.USER, bad)
    with pytest.raises(ValueError):
        classify(-1)
