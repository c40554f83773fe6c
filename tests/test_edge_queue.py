"""The edge's store-and-forward queue: in order, nothing lost, across a reopen."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sqems.edge.queue import Item, StoreQueue
from sqems.errors import ValidationFailed


def test_items_survive_a_reopen_in_order_with_their_bytes(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    with StoreQueue(path) as q:
        seqs = q.append(Item("sqems/v1/S/L/M/P", bytes([i, 0, 255])) for i in range(5))
        q.append([Item("sqems/v1/S/L/edge/E/status", b"{}", qos=0, retain=True)])
        assert q.ack(seqs[0])
    with StoreQueue(path) as q:
        assert (q.depth, q.bytes) == (5, 4 * 3 + 2)
        items = q.peek(10)
        assert [i.payload for i in items[:4]] == [bytes([i, 0, 255]) for i in range(1, 5)]
        assert (items[-1].qos, items[-1].retain) == (0, True)
        assert [i.seq for i in items] == sorted(i.seq for i in items)
        # sequence numbers are never reused, so order holds across restarts
        (later,) = q.append([Item("t", b"x")])
        assert later > items[-1].seq


def test_peek_after_a_sequence_number_and_ack_many(tmp_path: Path) -> None:
    with StoreQueue(tmp_path / "q.db") as q:
        seqs = q.append(Item("t", str(i).encode()) for i in range(10))
        assert [i.payload for i in q.peek(3, after=seqs[4])] == [b"5", b"6", b"7"]
        assert q.ack_many([seqs[0], seqs[1], seqs[1]]) == 2
        assert not q.ack(seqs[0])
        assert q.depth == 8
        assert q.peek(1)[0].seq == seqs[2]


def test_a_qos_that_mqtt_has_not_is_refused(tmp_path: Path) -> None:
    with StoreQueue(None) as q, pytest.raises(ValidationFailed, match="QoS 3"):
        q.append([Item("t", b"x", qos=3)])


@settings(max_examples=40)
@given(
    steps=st.lists(
        st.one_of(
            st.tuples(st.just("append"), st.lists(st.binary(max_size=8), max_size=5)),
            st.tuples(st.just("ack"), st.integers(0, 4)),
            st.tuples(st.just("reopen"), st.none()),
        ),
        max_size=25,
    )
)
def test_the_queue_never_loses_or_reorders_what_was_not_acked(
    tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[str, object]]
) -> None:
    """Whatever mix of appends, acks of some waiting item and reopens: the queue holds
    exactly the appended items not acked, in the order they were appended."""
    path = tmp_path_factory.mktemp("queue") / "q.db"
    expected: list[tuple[int, bytes]] = []
    q = StoreQueue(path)
    try:
        for action, arg in steps:
            if action == "append":
                assert isinstance(arg, list)
                expected += zip(q.append(Item("t", p) for p in arg), arg, strict=True)
            elif action == "ack" and expected:
                assert isinstance(arg, int)
                seq, _ = expected.pop(arg % len(expected))
                assert q.ack(seq)
            elif action == "reopen":
                q.close()
                q = StoreQueue(path)
            assert [(i.seq, i.payload) for i in q.peek(1_000)] == expected
            assert q.depth == len(expected)
            assert q.bytes == sum(len(p) for _, p in expected)
    finally:
        q.close()
