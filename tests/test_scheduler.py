"""SendScheduler: strict priority by urgency, round-robin within an urgency.

The behaviour tests and the Hypothesis properties run on both
implementations through the `fastpath` fixture. The state machine at the
end drives the compiled scheduler, the pure twin and a deliberately naive
model (a list per urgency) with the same random operations and requires
identical answers after every step, including the type and message of the
exception an invalid operation raises. QUICDIST_FUZZ_EXAMPLES=N runs N
examples per property (and N state-machine runs) instead of the default.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    rule,
)

from quicdist import _accel
from quicdist.errors import ConfigurationError
from tests.conftest import COMPILED, PURE


EXAMPLES = int(os.environ.get("QUICDIST_FUZZ_EXAMPLES", "0") or 0)
MAX_ID = 2**62 - 1


def examples(default: int, **kwargs) -> settings:
    """Hypothesis settings: ``default`` examples, or QUICDIST_FUZZ_EXAMPLES."""
    return settings(max_examples=EXAMPLES or default, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow], **kwargs)


def calls(sched, n: int) -> list[int]:
    return [sched.next() for _ in range(n)]


def make(fastpath, streams: dict[int, int], unblocked=()):
    sched = fastpath.SendScheduler()
    for sid, urgency in streams.items():
        sched.add(sid, urgency)
    for sid in unblocked:
        sched.unblock(sid)
    return sched


# ---------------------------------------------------------------------------
# Behaviour


def test_accel_selects_the_scheduler_with_the_codec():
    module = COMPILED if _accel.USING_EXTENSION else PURE
    assert _accel.SendScheduler is module.SendScheduler


def test_empty_and_blocked(fastpath):
    sched = fastpath.SendScheduler()
    assert sched.next() == -1 and sched.active == 0 and len(sched) == 0
    sched.add(4, 1)
    assert sched.next() == -1  # a new stream starts blocked
    assert len(sched) == 1 and sched.active == 0 and 4 in sched and 8 not in sched
    sched.unblock(4)
    assert calls(sched, 3) == [4, 4, 4] and sched.active == 1
    sched.block(4)
    assert sched.next() == -1 and sched.active == 0


def test_round_robin_within_an_urgency(fastpath):
    sched = make(fastpath, {4: 3, 8: 3, 12: 3}, [4, 8, 12])
    assert calls(sched, 7) == [4, 8, 12, 4, 8, 12, 4]


def test_a_newly_unblocked_stream_joins_at_the_back(fastpath):
    sched = make(fastpath, {1: 7, 2: 7, 3: 7, 4: 7}, [1, 2, 3])
    assert sched.next() == 1  # queue now 2, 3, 1
    sched.unblock(4)  # queue 2, 3, 1, 4
    assert calls(sched, 8) == [2, 3, 1, 4, 2, 3, 1, 4]
    sched.block(3)
    sched.unblock(3)  # back of the queue again: 2, 1, 4, 3
    assert calls(sched, 4) == [2, 1, 4, 3]


def test_unblock_and_block_are_idempotent(fastpath):
    sched = make(fastpath, {1: 0, 2: 0, 3: 0}, [1, 2, 3])
    assert sched.next() == 1
    sched.unblock(2)  # already unblocked: keeps its place at the front
    sched.unblock(2)
    assert sched.active == 3
    assert calls(sched, 3) == [2, 3, 1]
    sched.block(2)
    sched.block(2)
    assert sched.active == 2
    assert calls(sched, 4) == [3, 1, 3, 1]


def test_strict_priority(fastpath):
    sched = make(fastpath, {0: 0, 4: 8, 20: 128, 24: 128}, [20, 24])
    assert calls(sched, 3) == [20, 24, 20]
    sched.unblock(4)
    assert calls(sched, 2) == [4, 4]  # bulk data waits while distribution data flows
    sched.unblock(0)
    assert sched.next() == 0  # a control frame is picked on the very next call
    sched.block(0)
    sched.block(4)
    assert calls(sched, 2) == [24, 20]  # the round-robin resumes where it was


def test_set_urgency(fastpath):
    sched = make(fastpath, {1: 5, 2: 5, 3: 9, 4: 9}, [1, 2, 3, 4])
    sched.set_urgency(3, 5)  # joins the back of urgency 5's queue
    assert sched.urgency(3) == 5
    assert calls(sched, 6) == [1, 2, 3, 1, 2, 3]
    sched.set_urgency(1, 5)  # same urgency: no move
    assert calls(sched, 3) == [1, 2, 3]
    sched.set_urgency(2, 200)
    assert calls(sched, 4) == [1, 3, 1, 3]
    sched.block(1)
    sched.set_urgency(1, 0)  # a blocked stream stays blocked
    assert sched.urgency(1) == 0 and sched.active == 3
    assert calls(sched, 2) == [3, 3]
    sched.unblock(1)
    assert sched.next() == 1


def test_remove(fastpath):
    sched = make(fastpath, {1: 5, 2: 5, 3: 5, 9: 1}, [1, 2, 3])
    sched.remove(9)  # blocked
    sched.remove(2)  # unblocked
    assert len(sched) == 2 and sched.active == 2 and 2 not in sched and 9 not in sched
    assert calls(sched, 4) == [1, 3, 1, 3]
    sched.add(2, 5)  # the id can be used again, blocked, with any urgency
    assert sched.next() == 1
    sched.remove(1)
    sched.remove(3)
    assert sched.next() == -1 and sched.active == 0 and len(sched) == 1


def test_unknown_streams_raise_key_error(fastpath):
    sched = make(fastpath, {4: 1})
    for op in (sched.remove, sched.block, sched.unblock, sched.urgency,
               lambda sid: sched.set_urgency(sid, 3)):
        for sid in (8, -1, 2**70, "4", 4.0, True, None):
            with pytest.raises(KeyError) as info:
                op(sid)
            assert info.value.args == (sid,)
    assert "4" not in sched and 4.0 not in sched and True not in sched and None not in sched
    sched.remove(4)
    with pytest.raises(KeyError):
        sched.remove(4)


@pytest.mark.parametrize("bad", [-1, 256, 1000, "1", 1.0, True, None])
def test_invalid_urgency(fastpath, bad):
    sched = make(fastpath, {4: 1})
    message = f"urgency must be an int from 0 to 255, got {bad!r}"
    with pytest.raises(ValueError) as info:
        sched.add(8, bad)
    assert type(info.value) is ConfigurationError and str(info.value) == message
    with pytest.raises(ConfigurationError) as info:
        sched.set_urgency(4, bad)
    assert str(info.value) == message
    with pytest.raises(ConfigurationError):
        sched.set_urgency(99, bad)  # the urgency is checked first
    assert len(sched) == 1 and sched.urgency(4) == 1 and 8 not in sched


@pytest.mark.parametrize("bad", [-1, 2**62, "4", 4.0, False, None])
def test_invalid_stream_id(fastpath, bad):
    with pytest.raises(ConfigurationError) as info:
        fastpath.SendScheduler().add(bad, 1)
    assert str(info.value) == f"stream_id must be an int from 0 to {MAX_ID}, got {bad!r}"


def test_duplicate_stream(fastpath):
    sched = make(fastpath, {4: 1})
    with pytest.raises(ValueError) as info:
        sched.add(4, 9)
    assert type(info.value) is ConfigurationError
    assert str(info.value) == "stream 4 is already scheduled"
    assert sched.urgency(4) == 1


def test_extreme_ids_and_urgencies(fastpath):
    sched = make(fastpath, {0: 255, MAX_ID: 0, 2**31: 128}, [0, MAX_ID, 2**31])
    assert calls(sched, 2) == [MAX_ID, MAX_ID]
    sched.block(MAX_ID)
    assert calls(sched, 2) == [2**31, 2**31]
    sched.remove(2**31)
    assert sched.next() == 0


def test_int_subclasses_are_plain_ids(fastpath):
    class Sid(int):
        pass

    sched = make(fastpath, {Sid(4): Sid(2)})
    sched.unblock(Sid(4))
    result = sched.next()
    assert result == 4 and type(result) is int
    assert type(sched.urgency(4)) is int and Sid(4) in sched


def test_many_streams(fastpath):
    n = 3000
    sched = fastpath.SendScheduler()
    for sid in range(n):
        sched.add(sid, 16 + sid % 240)
        sched.unblock(sid)
    assert sched.active == n and len(sched) == n
    assert calls(sched, 3) == [0, 240, 480]
    for sid in range(0, n, 240):  # empty urgency 16
        sched.block(sid)
    assert sched.next() == 1
    for sid in range(n):
        sched.remove(sid)
    assert sched.next() == -1 and len(sched) == 0 and sched.active == 0
    for sid in range(n):  # slots are reused
        sched.add(sid * 4, 1)
    sched.unblock(4 * (n - 1))
    assert sched.next() == 4 * (n - 1)


def test_repr(fastpath):
    sched = make(fastpath, {1: 1, 2: 2}, [2])
    assert repr(sched) == "<SendScheduler streams=2 active=1>"


# ---------------------------------------------------------------------------
# Properties (each implementation)


streams_st = st.dictionaries(st.integers(0, 2**62 - 1), st.integers(0, 255), min_size=1,
                             max_size=30)


@pytest.mark.parametrize("impl", [p for p in (COMPILED, PURE) if p is not None],
                         ids=lambda m: "cython" if m is COMPILED else "python")
@examples(100)
@given(data=st.data())
def test_property_strict_priority(impl, data):
    streams = data.draw(streams_st)
    unblocked = data.draw(st.lists(st.sampled_from(sorted(streams)), unique=True))
    sched = make(impl, streams, unblocked)
    if not unblocked:
        assert sched.next() == -1
        return
    lowest = min(streams[s] for s in unblocked)
    for _ in range(2 * len(unblocked)):
        picked = sched.next()
        assert picked in unblocked
        # never a stream less urgent than some unblocked stream
        assert streams[picked] == lowest


@pytest.mark.parametrize("impl", [p for p in (COMPILED, PURE) if p is not None],
                         ids=lambda m: "cython" if m is COMPILED else "python")
@examples(100)
@given(ids=st.lists(st.integers(0, MAX_ID), min_size=1, max_size=20, unique=True),
       urgency=st.integers(0, 255), k=st.integers(1, 5),
       others=st.dictionaries(st.integers(0, MAX_ID), st.integers(0, 255), max_size=10))
def test_property_fair_within_an_urgency(impl, ids, urgency, k, others):
    # Less urgent (unblocked) and any (blocked) streams must not disturb it.
    sched = make(impl, {sid: urgency for sid in ids}, ids)
    for sid, other in others.items():
        if sid not in ids:
            sched.add(sid, other)
            if other > urgency:
                sched.unblock(sid)
    n = len(ids)
    seq = calls(sched, k * n)
    for sid in ids:
        assert seq.count(sid) == k
    assert seq[:n] == ids  # unblocked in that order: served in that order
    assert all(seq[i] == seq[i % n] for i in range(k * n))  # then the same rotation


@pytest.mark.parametrize("impl", [p for p in (COMPILED, PURE) if p is not None],
                         ids=lambda m: "cython" if m is COMPILED else "python")
@examples(100)
@given(n=st.integers(0, 40), warmup=st.integers(0, 100), blocked=st.integers(0, 10))
def test_property_no_starvation_at_the_lowest_urgency(impl, n, warmup, blocked):
    sched = make(impl, {sid: 255 for sid in range(n + blocked)}, range(n))
    calls(sched, warmup)
    sched.add(10_000, 255)
    sched.unblock(10_000)
    seq = calls(sched, n + 1)
    assert seq[-1] == 10_000 and 10_000 not in seq[:-1]  # after each other stream, once
    assert sorted(seq[:-1]) == list(range(n))


@pytest.mark.parametrize("impl", [p for p in (COMPILED, PURE) if p is not None],
                         ids=lambda m: "cython" if m is COMPILED else "python")
@examples(60)
@given(data=st.data())
def test_property_block_set_urgency_remove(impl, data):
    streams = data.draw(streams_st)
    ids = sorted(streams)
    sched = make(impl, streams, ids)
    gone = data.draw(st.lists(st.sampled_from(ids), unique=True))
    for sid in gone[: len(gone) // 2]:
        sched.block(sid)
    for sid in gone[len(gone) // 2:]:
        sched.remove(sid)
    moved = data.draw(st.dictionaries(st.sampled_from(ids), st.integers(0, 255)))
    for sid, urgency in moved.items():
        if sid in sched:
            sched.set_urgency(sid, urgency)
            streams[sid] = urgency
    live = [sid for sid in ids if sid not in gone]
    assert sched.active == len(live) and len(sched) == len(ids) - len(gone[len(gone) // 2:])
    served = calls(sched, 3 * len(streams))
    if not live:
        assert served == [-1] * len(served)
        return
    lowest = min(streams[sid] for sid in live)
    assert set(served) == {sid for sid in live if streams[sid] == lowest}


# ---------------------------------------------------------------------------
# The state machine: compiled, pure and a naive model, step by step


class Model:
    """The contract, written as plainly as possible (O(n) everything)."""

    def __init__(self) -> None:
        self.urgency_of: dict[int, int] = {}
        self.queues: dict[int, list[int]] = {}

    def add(self, sid, urgency):
        if type(sid) is bool or not isinstance(sid, int) or not 0 <= sid <= MAX_ID:
            raise ConfigurationError(f"stream_id must be an int from 0 to {MAX_ID}, got {sid!r}")
        self._check_urgency(urgency)
        if sid in self.urgency_of:
            raise ConfigurationError(f"stream {sid} is already scheduled")
        self.urgency_of[sid] = urgency

    @staticmethod
    def _check_urgency(urgency):
        if type(urgency) is bool or not isinstance(urgency, int) or not 0 <= urgency <= 255:
            raise ConfigurationError(f"urgency must be an int from 0 to 255, got {urgency!r}")

    def _known(self, sid):
        if type(sid) is bool or not isinstance(sid, int) or sid not in self.urgency_of:
            raise KeyError(sid)

    def _queue(self, sid):
        return self.queues.setdefault(self.urgency_of[sid], [])

    def remove(self, sid):
        self._known(sid)
        self.block(sid)
        del self.urgency_of[sid]

    def urgency(self, sid):
        self._known(sid)
        return self.urgency_of[sid]

    def set_urgency(self, sid, urgency):
        self._check_urgency(urgency)
        self._known(sid)
        if urgency == self.urgency_of[sid]:
            return
        active = sid in self._queue(sid)
        self.block(sid)
        self.urgency_of[sid] = urgency
        if active:
            self.unblock(sid)

    def unblock(self, sid):
        self._known(sid)
        if sid not in self._queue(sid):
            self._queue(sid).append(sid)

    def block(self, sid):
        self._known(sid)
        if sid in self._queue(sid):
            self._queue(sid).remove(sid)

    def next(self):
        for urgency in sorted(self.queues):
            queue = self.queues[urgency]
            if queue:
                sid = queue.pop(0)
                queue.append(sid)
                return sid
        return -1

    @property
    def active(self):
        return sum(map(len, self.queues.values()))

    def __len__(self):
        return len(self.urgency_of)

    def __contains__(self, sid):
        return type(sid) is not bool and isinstance(sid, int) and sid in self.urgency_of


ids_st = st.one_of(st.integers(0, 24), st.sampled_from([0, 1, 2**31, 2**32, MAX_ID]))
# Few distinct urgencies, so that queues of several streams form.
urgencies_st = st.one_of(st.integers(0, 2), st.sampled_from([1, 15, 16, 128, 255]))
bad_ids_st = st.one_of(st.integers(-3, -1), st.just(MAX_ID + 1), st.just(2**64),
                       st.sampled_from(["1", 1.0, None, True, False, b"\x01"]))
bad_urgencies_st = st.one_of(st.integers(-3, -1), st.integers(256, 300),
                             st.sampled_from(["1", 1.0, None, True, False]))


class SchedulerMachine(RuleBasedStateMachine):
    """Same operations on every implementation; every answer must agree."""

    streams = Bundle("streams")

    def __init__(self) -> None:
        super().__init__()
        self.impls = [Model(), PURE.SendScheduler()]
        if COMPILED is not None:
            self.impls.append(COMPILED.SendScheduler())

    def each(self, op, *args):
        results = []
        for impl in self.impls:
            try:
                results.append(("ok", op(impl, *args)))
            except Exception as exc:  # compared as data
                results.append(("raised", type(exc), exc.args))
        first = results[0]
        for impl, result in zip(self.impls[1:], results[1:], strict=True):
            assert result == first, (type(impl).__module__, op.__name__, args, results)
        return first

    @initialize(target=streams, ids=st.lists(ids_st, max_size=8, unique=True),
                urgencies=st.lists(urgencies_st, min_size=1, max_size=3))
    def start(self, ids, urgencies):
        """Begin with a few unblocked streams, so that next() has choices."""
        for i, sid in enumerate(ids):
            self.each(lambda s, *a: s.add(*a), sid, urgencies[i % len(urgencies)])
            self.each(lambda s, i: s.unblock(i), sid)
        return multiple(*ids)

    # Hypothesis picks rules uniformly: most rules are valid operations on
    # known streams, one rule is every operation with any arguments.

    @rule(target=streams, sid=ids_st, urgency=urgencies_st)
    def add(self, sid, urgency):
        self.each(lambda s, *a: s.add(*a), sid, urgency)
        return sid

    @rule(target=streams, sid=ids_st, urgency=urgencies_st)
    def add_unblocked(self, sid, urgency):
        self.each(lambda s, *a: s.add(*a), sid, urgency)
        self.each(lambda s, i: s.unblock(i), sid)
        return sid

    @rule(sid=consumes(streams))
    def remove(self, sid):
        self.each(lambda s, i: s.remove(i), sid)

    @rule(sid=streams)
    def unblock(self, sid):
        self.each(lambda s, i: s.unblock(i), sid)

    @rule(sid=streams)
    def block(self, sid):
        self.each(lambda s, i: s.block(i), sid)

    @rule(sid=streams, urgency=urgencies_st)
    def set_urgency(self, sid, urgency):
        self.each(lambda s, *a: s.set_urgency(*a), sid, urgency)

    @rule(sid=streams)
    def set_urgency_unchanged(self, sid):
        current = self.impls[0].urgency_of.get(sid, 0)  # the model's view
        self.each(lambda s, *a: s.set_urgency(*a), sid, current)

    @rule(sid=streams)
    def urgency(self, sid):
        self.each(lambda s, i: (s.urgency(i), i in s), sid)

    @rule(times=st.integers(1, 8))
    def next(self, times):
        for _ in range(times):
            self.each(lambda s: s.next())

    @rule(op=st.sampled_from(["add", "remove", "unblock", "block", "set_urgency", "urgency",
                              "contains"]),
          sid=st.one_of(streams, ids_st, bad_ids_st),
          urgency=st.one_of(urgencies_st, bad_urgencies_st))
    def anything(self, op, sid, urgency):
        if op == "contains":
            self.each(lambda s, i: i in s, sid)
        elif op in ("add", "set_urgency"):
            self.each(lambda s, *a: getattr(s, op)(*a), sid, urgency)
        else:
            self.each(lambda s, i: getattr(s, op)(i), sid)

    @invariant()
    def same_counts(self):
        self.each(lambda s: (len(s), s.active))


SchedulerMachine.TestCase.settings = examples(150, stateful_step_count=80)
test_scheduler_state_machine = SchedulerMachine.TestCase
