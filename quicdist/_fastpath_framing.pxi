# Included at the end of _fastpath.pyx: the compiled distribution framing.
#
# The same API, results, exception types and messages as the pure twin
# quicdist/_framing_py.py (the specification; its docstrings apply here),
# held together by tests/test_framing.py. The messages are built by the
# twin's functions, so they cannot drift apart.
#
# Decoder layout: complete frames are cut straight out of the chunk being
# fed (one PyBytes_FromStringAndSize each). The one frame still incomplete at
# the end of a chunk is written straight into the bytes object that will be
# returned, grown by doubling (_PyBytes_Resize) but never beyond twice what
# was received: nothing is allocated from a declared length before the bytes
# it promises have arrived, and a large frame arriving in small pieces is
# copied once, into its result. Every read is checked against the bytes
# available before it happens.

from cpython.buffer cimport PyBUF_FULL_RO, PyBuffer_IsContiguous, PyObject_CheckBuffer

from quicdist import _framing_py
from quicdist.errors import FrameError


DEFAULT_MAX_FRAME_SIZE = _framing_py.DEFAULT_MAX_FRAME_SIZE
TICK = _framing_py.TICK

cdef object _msg_not_bytes_like = _framing_py.msg_not_bytes_like
cdef object _msg_payload_too_large = _framing_py.msg_payload_too_large
cdef object _msg_frame_too_large = _framing_py.msg_frame_too_large
cdef object _msg_bad_max_frame_size = _framing_py.msg_bad_max_frame_size

cdef enum:
    _FRAME_HEADER = 4
    # Smallest first allocation for an incomplete frame (capped by its length).
    _MIN_BUFFER = 256

cdef uint64_t _MAX_FRAME_LENGTH = 0xFFFFFFFF


cdef inline uint32_t _be32(const unsigned char* p) noexcept nogil:
    return ((<uint32_t>p[0]) << 24) | ((<uint32_t>p[1]) << 16) | ((<uint32_t>p[2]) << 8) | p[3]


cdef inline void _put_be32(unsigned char* p, uint32_t v) noexcept nogil:
    p[0] = <unsigned char>(v >> 24)
    p[1] = <unsigned char>(v >> 16)
    p[2] = <unsigned char>(v >> 8)
    p[3] = <unsigned char>v


cdef int _get_bytes_view(object obj, Py_buffer* view) except -1:
    """Fill ``view`` like memoryview(obj), refusing what is not C-contiguous.

    Mirrors the twin's _as_buffer: no buffer (or a TypeError from the
    exporter) and a non-C-contiguous buffer both give the same TypeError.
    The caller releases ``view`` (only when this returned 0).
    """
    if not PyObject_CheckBuffer(obj):
        raise TypeError(_msg_not_bytes_like(obj))
    try:
        PyObject_GetBuffer(obj, view, PyBUF_FULL_RO)
    except TypeError:
        raise TypeError(_msg_not_bytes_like(obj)) from None
    if not PyBuffer_IsContiguous(view, b'C'):
        PyBuffer_Release(view)
        raise TypeError(_msg_not_bytes_like(obj))
    return 0


# ---------------------------------------------------------------------------
# Encoding


def pack_frame(payload):
    """pack_frame(payload) -> bytes

    One distribution frame: the 4-byte big-endian length, then ``payload``
    (any C-contiguous bytes-like object, copied once).
    """
    cdef Py_buffer view
    cdef const char* src
    cdef Py_ssize_t n
    cdef bint release = False
    cdef object out
    cdef char* dst
    if PyBytes_Check(payload):
        src = PyBytes_AS_STRING(payload)
        n = PyBytes_GET_SIZE(payload)
    else:
        _get_bytes_view(payload, &view)
        release = True
        src = <const char*>view.buf
        n = view.len
    try:
        if <uint64_t>n > _MAX_FRAME_LENGTH:
            raise ConfigurationError(_msg_payload_too_large(n))
        out = PyBytes_FromStringAndSize(NULL, n + _FRAME_HEADER)
        dst = PyBytes_AS_STRING(out)
        _put_be32(<unsigned char*>dst, <uint32_t>n)
        if n:
            memcpy(dst + _FRAME_HEADER, src, n)
        return out
    finally:
        if release:
            PyBuffer_Release(&view)


def pack_frames(payloads):
    """pack_frames(payloads) -> bytes

    Many frames coalesced into one ``bytes`` object: one allocation, each
    payload (any C-contiguous bytes-like object) copied once, into it.
    """
    cdef object items
    cdef Py_ssize_t count, i, got = 0, n
    cdef Py_ssize_t total = 0
    cdef Py_buffer* views = NULL
    cdef object item, out
    cdef char* dst
    if type(payloads) is list or type(payloads) is tuple:
        items = payloads
    else:
        items = list(payloads)
    count = len(items)
    if count == 0:
        return b""
    views = <Py_buffer*>PyMem_Malloc(count * sizeof(Py_buffer))
    if views == NULL:
        raise MemoryError()
    try:
        # Hold every buffer while copying: the lengths summed are the lengths
        # copied, whatever the items are.
        for i in range(count):
            item = items[i]
            if PyBytes_Check(item):
                PyObject_GetBuffer(item, &views[i], PyBUF_SIMPLE)
            else:
                _get_bytes_view(item, &views[i])
            got += 1
            n = views[i].len
            if <uint64_t>n > _MAX_FRAME_LENGTH:
                raise ConfigurationError(_msg_payload_too_large(n))
            total += n + _FRAME_HEADER
        out = PyBytes_FromStringAndSize(NULL, total)
        dst = PyBytes_AS_STRING(out)
        for i in range(count):
            n = views[i].len
            _put_be32(<unsigned char*>dst, <uint32_t>n)
            if n:
                memcpy(dst + _FRAME_HEADER, views[i].buf, n)
            dst += n + _FRAME_HEADER
        return out
    finally:
        for i in range(got):
            PyBuffer_Release(&views[i])
        PyMem_Free(views)


# ---------------------------------------------------------------------------
# Decoding


cdef uint32_t _check_max_frame_size(object value) except? 0:
    if type(value) is bool or not isinstance(value, int) or not 0 <= value <= 0xFFFFFFFF:
        raise ConfigurationError(_msg_bad_max_frame_size(value))
    return <uint32_t>value


cdef class FrameDecoder:
    """FrameDecoder(max_frame_size=DEFAULT_MAX_FRAME_SIZE)

    Reassembles the distribution frames of one stream; see
    quicdist._framing_py.FrameDecoder for the contract.
    """

    # The frame still incomplete at the end of what was fed so far: its
    # header bytes (_hdr_len of them; 4 once complete), then, once the header
    # is complete, its payload length and the payload received so far,
    # written straight into the bytes object that feed() will return
    # (_fill bytes of _cap; _cap never exceeds _length and grows by
    # doubling, so it is at most twice what was received).
    cdef unsigned char _hdr[4]
    cdef Py_ssize_t _hdr_len
    cdef PyObject* _frame
    cdef Py_ssize_t _length
    cdef Py_ssize_t _fill
    cdef Py_ssize_t _cap
    cdef uint32_t _max
    # The FrameError message once poisoned, else None.
    cdef object _error

    def __cinit__(self, max_frame_size=DEFAULT_MAX_FRAME_SIZE):
        self._frame = NULL
        self._hdr_len = self._length = self._fill = self._cap = 0
        self._error = None
        self._max = _check_max_frame_size(max_frame_size)

    def __dealloc__(self):
        Py_XDECREF(self._frame)
        self._frame = NULL

    @property
    def max_frame_size(self):
        """The largest payload accepted, in bytes."""
        return self._max

    @property
    def buffered(self):
        """Bytes held for a frame not yet complete (a partial header included)."""
        return self._hdr_len + self._fill

    def __repr__(self):
        if self._error is not None:
            state = "poisoned"
        else:
            state = f"buffered={self._hdr_len + self._fill}"
        return f"<FrameDecoder max_frame_size={self._max} {state}>"

    cdef void _clear(self) noexcept:
        Py_XDECREF(self._frame)
        self._frame = NULL
        self._hdr_len = self._length = self._fill = self._cap = 0

    cdef _poison(self, uint32_t length):
        self._error = _msg_frame_too_large(length, self._max)
        self._clear()
        return FrameError(self._error)

    cdef int _start(self, Py_ssize_t length, const unsigned char* p, Py_ssize_t avail) except -1:
        """The header is complete and announces length > avail bytes: keep what is here."""
        cdef Py_ssize_t cap = avail * 2
        if cap < _MIN_BUFFER:
            cap = _MIN_BUFFER
        if cap > length:
            cap = length
        try:
            self._frame = _new_bytes(NULL, cap)  # cap >= 1: never the shared b""
        except MemoryError:
            self._clear()  # as in _append: the frame is lost, never half-kept
            raise
        self._cap = cap
        self._length = length
        if avail:
            memcpy(_bytes_data(self._frame), p, avail)
        self._fill = avail
        return 0

    cdef int _append(self, const unsigned char* p, Py_ssize_t n) except -1:
        """Add n more payload bytes (fill + n <= length)."""
        cdef Py_ssize_t want = self._fill + n
        cdef Py_ssize_t cap
        if want > self._cap:
            cap = self._cap * 2
            if cap > self._length:
                cap = self._length
            if cap < want:
                cap = want
            try:
                _PyBytes_Resize(&self._frame, cap)
            except MemoryError:
                self._clear()  # the frame is lost: the stream cannot be resynchronised
                raise
            self._cap = cap
        memcpy(_bytes_data(self._frame) + self._fill, p, n)
        self._fill = want
        return 0

    def feed(self, data):
        """feed(data) -> list[bytes]

        Add the stream's next bytes (any C-contiguous bytes-like object);
        return the frames they complete, in order, a tick as b"".
        """
        cdef Py_buffer view
        if self._error is not None:
            raise FrameError(self._error)
        if PyBytes_Check(data):
            return self._feed(<const unsigned char*>PyBytes_AS_STRING(data),
                              PyBytes_GET_SIZE(data))
        _get_bytes_view(data, &view)
        try:
            return self._feed(<const unsigned char*>view.buf, view.len)
        finally:
            PyBuffer_Release(&view)

    cdef list _feed(self, const unsigned char* p, Py_ssize_t size):
        cdef list frames = []
        cdef Py_ssize_t take
        cdef uint32_t length
        cdef uint32_t limit = self._max
        cdef object frame
        if self._hdr_len:
            # 1. Complete the frame left over from the previous chunk.
            if self._hdr_len < _FRAME_HEADER:
                take = _FRAME_HEADER - self._hdr_len
                if take > size:
                    take = size
                memcpy(self._hdr + self._hdr_len, p, take)
                self._hdr_len += take
                p += take
                size -= take
                if self._hdr_len < _FRAME_HEADER:
                    return frames
                length = _be32(self._hdr)
                if length > limit:
                    raise self._poison(length)
                if <Py_ssize_t>length > size:
                    self._start(length, p, size)
                    return frames
                # The whole payload is in this chunk: no copy but the frame's.
                frames.append(PyBytes_FromStringAndSize(<const char*>p, length))
                p += length
                size -= length
                self._hdr_len = 0
            else:
                take = self._length - self._fill
                if take > size:
                    take = size
                self._append(p, take)
                p += take
                size -= take
                if self._fill < self._length:
                    return frames
                frame = <object>self._frame  # _cap == _length: already the exact size
                Py_DECREF(frame)  # the decoder's reference now belongs to `frame`
                self._frame = NULL
                frames.append(frame)
                self._hdr_len = self._length = self._fill = self._cap = 0
        # 2. Cut the frames that are complete in the chunk itself.
        while size >= _FRAME_HEADER:
            length = _be32(p)
            if length > limit:
                raise self._poison(length)
            if <Py_ssize_t>length > size - _FRAME_HEADER:
                # 3a. Keep an incomplete frame.
                memcpy(self._hdr, p, _FRAME_HEADER)
                self._hdr_len = _FRAME_HEADER
                self._start(length, p + _FRAME_HEADER, size - _FRAME_HEADER)
                return frames
            frames.append(PyBytes_FromStringAndSize(<const char*>p + _FRAME_HEADER, length))
            p += _FRAME_HEADER + length
            size -= _FRAME_HEADER + length
        # 3b. Keep a partial header.
        if size:
            memcpy(self._hdr, p, size)
            self._hdr_len = size
        return frames
