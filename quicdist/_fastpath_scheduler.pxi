# Included at the end of _fastpath.pyx: the compiled send scheduler.
#
# The same API, results, exception types and messages as the pure twin
# quicdist/_scheduler_py.py (the specification; its docstrings apply here),
# held together by tests/test_scheduler.py's state machine. The messages and
# the argument checks are the twin's functions.
#
# Layout: every known stream has a slot in one C array (slots of removed
# streams are reused through a free list); a dict maps the stream id to its
# slot. Each urgency's unblocked streams form a circular doubly linked list
# of slots, _head[u] being the one served next; bit u of the 256-bit _mask
# is set when that list is not empty. next() is then: lowest set bit, the
# head's id, head = head.next. Every operation is O(1).

from cpython.mem cimport PyMem_Free, PyMem_Realloc
from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t

from quicdist import _scheduler_py


cdef object _check_urgency = _scheduler_py.check_urgency
cdef object _check_stream_id = _scheduler_py.check_stream_id
cdef object _msg_duplicate = _scheduler_py.msg_duplicate

cdef extern from *:
    """
    static inline int quicdist_ctz64(unsigned long long x) {
    #if defined(__GNUC__) || defined(__clang__)
        return __builtin_ctzll(x);
    #else
        int n = 0;
        while (!(x & 1ULL)) { x >>= 1; n++; }
        return n;
    #endif
    }
    """
    int quicdist_ctz64(unsigned long long x) noexcept nogil

cdef enum:
    _LEVELS = 256
    _NONE = -1


cdef struct _Slot:
    int64_t stream_id     # -1: a free slot
    int32_t prev          # neighbours in its urgency's ring (when active)
    int32_t next          # ... or the next free slot (when free)
    uint8_t urgency
    uint8_t active


cdef class SendScheduler:
    """SendScheduler()

    Strict priority by urgency (0..255, 0 first), round-robin within an
    urgency; see quicdist._scheduler_py.SendScheduler for the contract.
    """

    cdef _Slot* _slots
    cdef int32_t _cap
    cdef int32_t _free          # first free slot, or _NONE
    cdef int32_t _used          # slots ever handed out (the rest are fresh)
    cdef Py_ssize_t _active
    cdef dict _index            # stream id (exact int) -> slot number (int)
    cdef int32_t _head[_LEVELS]
    cdef uint64_t _mask[4]

    def __cinit__(self):
        cdef int i
        self._slots = NULL
        self._cap = 0
        self._free = _NONE
        self._used = 0
        self._active = 0
        self._index = {}
        for i in range(_LEVELS):
            self._head[i] = _NONE
        for i in range(4):
            self._mask[i] = 0

    def __dealloc__(self):
        PyMem_Free(self._slots)
        self._slots = NULL

    # -- slots and rings ---------------------------------------------------

    cdef int32_t _new_slot(self) except -1:
        cdef int32_t slot
        cdef int32_t cap
        cdef void* grown
        if self._free != _NONE:
            slot = self._free
            self._free = self._slots[slot].next
            return slot
        if self._used == self._cap:
            if self._cap >= 0x3FFFFFFF:
                raise MemoryError()
            cap = self._cap * 2 if self._cap else 16
            grown = PyMem_Realloc(self._slots, <size_t>cap * sizeof(_Slot))
            if grown == NULL:
                raise MemoryError()
            self._slots = <_Slot*>grown
            self._cap = cap
        slot = self._used
        self._used += 1
        return slot

    cdef int32_t _lookup(self, object stream_id) except -1:
        """The slot of a known stream, or KeyError(stream_id) (as the twin)."""
        cdef object sid = stream_id
        cdef object slot
        if type(sid) is not int:
            if type(sid) is bool or not isinstance(sid, int):
                raise KeyError(stream_id)
            sid = int(sid)
        slot = self._index.get(sid)
        if slot is None:
            raise KeyError(stream_id)
        return <int32_t>slot

    cdef void _enqueue(self, int32_t slot) noexcept:
        """Put an inactive slot at the back of its urgency's ring."""
        cdef _Slot* s = &self._slots[slot]
        cdef int level = s.urgency
        cdef int32_t head = self._head[level]
        cdef int32_t tail
        if head == _NONE:
            s.prev = slot
            s.next = slot
            self._head[level] = slot
            self._mask[level >> 6] |= (<uint64_t>1) << (level & 63)
        else:
            tail = self._slots[head].prev
            s.prev = tail
            s.next = head
            self._slots[tail].next = slot
            self._slots[head].prev = slot
        s.active = 1
        self._active += 1

    cdef void _dequeue(self, int32_t slot) noexcept:
        """Take an active slot out of its urgency's ring."""
        cdef _Slot* s = &self._slots[slot]
        cdef int level = s.urgency
        if s.next == slot:
            self._head[level] = _NONE
            self._mask[level >> 6] &= ~((<uint64_t>1) << (level & 63))
        else:
            self._slots[s.prev].next = s.next
            self._slots[s.next].prev = s.prev
            if self._head[level] == slot:
                self._head[level] = s.next
        s.active = 0
        self._active -= 1

    # -- the API -------------------------------------------------------------

    def add(self, stream_id, urgency):
        """add(stream_id, urgency) -> None

        Start scheduling a stream, blocked, at ``urgency`` (0..255).
        """
        cdef object sid = _check_stream_id(stream_id)
        cdef int level = _check_urgency(urgency)
        cdef int32_t slot
        cdef _Slot* s
        if sid in self._index:
            raise ConfigurationError(_msg_duplicate(sid))
        slot = self._new_slot()
        s = &self._slots[slot]
        s.stream_id = <int64_t>sid
        s.prev = _NONE
        s.next = _NONE
        s.urgency = <uint8_t>level
        s.active = 0
        self._index[sid] = slot

    def remove(self, stream_id):
        """remove(stream_id) -> None

        Forget a stream (blocked or not).
        """
        cdef int32_t slot = self._lookup(stream_id)
        cdef _Slot* s = &self._slots[slot]
        if s.active:
            self._dequeue(slot)
        del self._index[s.stream_id]
        s.stream_id = -1
        s.next = self._free
        self._free = slot

    def urgency(self, stream_id):
        """urgency(stream_id) -> int

        The urgency of a known stream.
        """
        return self._slots[self._lookup(stream_id)].urgency

    def set_urgency(self, stream_id, urgency):
        """set_urgency(stream_id, urgency) -> None

        Move a stream to another urgency, keeping it blocked or unblocked; an
        unblocked stream joins the back of its new urgency's queue.
        """
        cdef int level = _check_urgency(urgency)
        cdef int32_t slot = self._lookup(stream_id)
        cdef _Slot* s = &self._slots[slot]
        if s.urgency == level:
            return
        if s.active:
            self._dequeue(slot)
            s.urgency = <uint8_t>level
            self._enqueue(slot)
        else:
            s.urgency = <uint8_t>level

    def unblock(self, stream_id):
        """unblock(stream_id) -> None

        The stream has data to send (no change if it was already unblocked).
        """
        cdef int32_t slot = self._lookup(stream_id)
        if not self._slots[slot].active:
            self._enqueue(slot)

    def block(self, stream_id):
        """block(stream_id) -> None

        The stream has nothing to send (no change if it was already blocked).
        """
        cdef int32_t slot = self._lookup(stream_id)
        if self._slots[slot].active:
            self._dequeue(slot)

    def next(self):
        """next() -> int

        The stream to serve now (it goes to the back of its urgency's
        queue), or -1 if none is unblocked.
        """
        cdef int word
        cdef int level
        cdef int32_t slot
        for word in range(4):
            if self._mask[word]:
                level = (word << 6) + quicdist_ctz64(self._mask[word])
                slot = self._head[level]
                self._head[level] = self._slots[slot].next
                return PyLong_FromLongLong(self._slots[slot].stream_id)
        return -1

    @property
    def active(self):
        """How many streams are unblocked."""
        return self._active

    def __len__(self):
        return len(self._index)

    def __contains__(self, stream_id):
        try:
            self._lookup(stream_id)
        except KeyError:
            return False
        return True

    def __repr__(self):
        return f"<SendScheduler streams={len(self._index)} active={self._active}>"
