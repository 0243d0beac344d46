"""Distribution capability flags (``DFLAG_*``) and the sets quicdist uses.

Each node sends its flags in the handshake (64 bits: ``send_name`` and
``challenge``); the connection then uses the features both sides offered
(``ours & theirs``). The values are those of OTP's
``lib/kernel/include/dist.hrl`` and ``erts/emulator/beam/dist.h``, checked
for OTP 25.2 (the local install: ``kernel-8.5.3/include/dist.hrl`` and
``erts_internal:get_dflags()``) and the OTP 26/27/master sources.

Two flags are erts-internal and never appear on the wire, so they are not
members: ``DFLAG_INTERNAL_TAGS`` (0x8000, ETS ``compressed``) and
``DFLAG_NO_MAGIC`` (0x200000, pending connections; commented out in
dist.hrl). ``DFLAG_RESERVED`` (0xf8000000) is a mask of unassigned bits,
kept as :data:`RESERVED_MASK`.

The OTP 25 shorthand: a peer that sets ``MANDATORY_25_DIGEST`` thereby
claims every flag of :data:`MANDATORY_25`, set or not (OTP 27 nodes send
the digest alone). :func:`expand` applies that rule; compare flags only
after expanding them.
"""

from __future__ import annotations

import enum


__all__ = [
    "MANDATORY_25",
    "MANDATORY_26",
    "QUICDIST_FLAGS",
    "QUICDIST_OPTIONAL_FLAGS",
    "QUICDIST_REQUIRED",
    "RESERVED_MASK",
    "DistFlag",
    "expand",
    "missing",
]


class DistFlag(enum.IntFlag):
    """One bit of the 64-bit distribution flags word (``DFLAG_`` dropped).

    Unknown bits from a newer peer are kept (``IntFlag`` keeps them), so
    ``DistFlag(value)`` never fails and round-trips any 64-bit value.
    """

    #: The node is visible (``nodes()``), not hidden. A per-node choice.
    PUBLISHED = 0x01
    #: The old atom cache (unused since R6).
    ATOM_CACHE = 0x02
    #: Mandatory since OTP 25 (part of :data:`MANDATORY_25`).
    EXTENDED_REFERENCES = 0x04
    #: Process monitors across nodes (MONITOR_P, DEMONITOR_P, MONITOR_P_EXIT).
    DIST_MONITOR = 0x08
    #: Mandatory since OTP 25.
    FUN_TAGS = 0x10
    #: Monitors by registered name.
    DIST_MONITOR_NAME = 0x20
    #: Atom cache toward hidden nodes.
    HIDDEN_ATOM_CACHE = 0x40
    #: Mandatory since OTP 25 (NEW_FUN_EXT).
    NEW_FUN_TAGS = 0x80
    #: Mandatory since OTP 25.
    EXTENDED_PIDS_PORTS = 0x100
    #: Mandatory since OTP 25 (EXPORT_EXT).
    EXPORT_PTR_TAG = 0x200
    #: Mandatory since OTP 25 (BIT_BINARY_EXT).
    BIT_BINARIES = 0x400
    #: Mandatory since OTP 25 (NEW_FLOAT_EXT).
    NEW_FLOATS = 0x800
    #: Unicode I/O (``io`` protocol with unicode requests).
    UNICODE_IO = 0x1000
    #: The distribution header with an atom cache (the non-pass-through form).
    DIST_HDR_ATOM_CACHE = 0x2000
    #: SMALL_ATOM_EXT.
    SMALL_ATOM_TAGS = 0x4000
    #: Mandatory since OTP 25 (ATOM_UTF8_EXT, SMALL_ATOM_UTF8_EXT).
    UTF8_ATOMS = 0x10000
    #: Mandatory since OTP 25 (MAP_EXT).
    MAP_TAG = 0x20000
    #: Mandatory since OTP 25 (32-bit creation: NEW_PID_EXT etc.).
    BIG_CREATION = 0x40000
    #: SEND_SENDER control message instead of SEND.
    SEND_SENDER = 0x80000
    #: Sequential-trace labels of any term.
    BIG_SEQTRACE_LABELS = 0x100000
    #: EXIT/EXIT2/MONITOR_P_EXIT carry their reason as a payload term.
    EXIT_PAYLOAD = 0x400000
    #: Large messages cut into fragments (requires the distribution header).
    FRAGMENTS = 0x800000
    #: The version-6 handshake (OTP 23+). Mandatory since OTP 25.
    HANDSHAKE_23 = 0x1000000
    #: UNLINK_ID / UNLINK_ID_ACK. Mandatory since OTP 26.
    UNLINK_ID = 0x2000000
    #: Shorthand for all of :data:`MANDATORY_25` (OTP 25+); required by OTP 27.
    MANDATORY_25_DIGEST = 0x4000000
    # Second 32-bit word (only in the version-6 handshake or 'c' complement).
    #: SPAWN_REQUEST / SPAWN_REPLY (``erpc``, ``rpc:call`` on OTP 23+).
    SPAWN = 1 << 32
    #: Dynamic node names: the listener names the dialer (``named:`` status).
    NAME_ME = 2 << 32
    #: Large node containers (NEWER_REFERENCE_EXT with more ids, V4_PORT_EXT).
    #: Mandatory since OTP 26.
    V4_NC = 4 << 32
    #: Process aliases (ALIAS_SEND, ALIAS_SEND_TT).
    ALIAS = 8 << 32
    #: LOCAL_EXT; erts-internal, never offered on the wire.
    LOCAL_EXT = 0x10 << 32
    #: Alternate activation signals (OTP 28's priority messages). Not OTP 25-27;
    #: listed so that a newer peer's flags print by name.
    ALTACT_SIG = 0x20 << 32


#: Unassigned bits of the first word (``DFLAG_RESERVED``).
RESERVED_MASK = 0xF8000000

#: What OTP 25 requires from a peer (``MANDATORY_DFLAGS_25`` in dist.hrl; equal
#: to OTP 25.2's ``erts_internal:get_dflags()`` mandatory field, 0x1070f94).
MANDATORY_25 = (
    DistFlag.EXTENDED_REFERENCES
    | DistFlag.FUN_TAGS
    | DistFlag.EXTENDED_PIDS_PORTS
    | DistFlag.NEW_FUN_TAGS
    | DistFlag.EXPORT_PTR_TAG
    | DistFlag.BIT_BINARIES
    | DistFlag.NEW_FLOATS
    | DistFlag.UTF8_ATOMS
    | DistFlag.MAP_TAG
    | DistFlag.BIG_CREATION
    | DistFlag.HANDSHAKE_23
)

#: What OTP 26 added to the mandatory set (``MANDATORY_DFLAGS_26``).
MANDATORY_26 = DistFlag.V4_NC | DistFlag.UNLINK_ID

#: What quicdist requires from a peer: OTP 26's full mandatory set. Every OTP
#: 25 node offers these too (V4_NC and UNLINK_ID are in its default flags), so
#: requiring them costs no OTP 25+ peer, and spares the node layer the old
#: unlink protocol and the short node containers.
QUICDIST_REQUIRED = MANDATORY_25 | MANDATORY_26

#: What quicdist advertises. Hidden by default: the node layer adds
#: :attr:`DistFlag.PUBLISHED` when it runs as a visible node (like ``erl
#: -name``); a visible node is sent ``features_request`` and global's
#: ``init_connect`` on connect (PROTOCOL.md section 8).
#:
#: * the mandatory sets (:data:`MANDATORY_25`, :data:`MANDATORY_26`) and the
#:   digest flag, which OTP 27 requires on its own;
#: * DIST_MONITOR and DIST_MONITOR_NAME: the node answers MONITOR_P (by pid
#:   and by name) and sends MONITOR_P_EXIT; without them OTP falls back to
#:   polling, and ``gen_server:call`` to the node works poorly.
#:
#: Left out on purpose:
#:
#: * DIST_HDR_ATOM_CACHE: every message uses the pass-through form
#:   (``'p'`` + terms); the atom-cache header is not implemented;
#: * FRAGMENTS: needs the distribution header (above), not implemented;
#: * SEND_SENDER: see :data:`QUICDIST_OPTIONAL_FLAGS`;
#: * EXIT_PAYLOAD, SPAWN, ALIAS: once negotiated the peer uses those message
#:   forms (PROTOCOL.md section 8); the node layer adds them when it
#:   implements them (without SPAWN, ``rpc:call`` to the node gives
#:   ``{badrpc, notsup}``);
#: * NAME_ME: dynamic node names are not supported by the listener;
#: * UNICODE_IO, SMALL_ATOM_TAGS, BIG_SEQTRACE_LABELS, HIDDEN_ATOM_CACHE,
#:   ATOM_CACHE: nothing uses them (the codec always sends UTF-8 atoms);
#: * LOCAL_EXT, ALTACT_SIG: internal / OTP 28.
QUICDIST_FLAGS = (
    MANDATORY_25
    | MANDATORY_26
    | DistFlag.MANDATORY_25_DIGEST
    | DistFlag.DIST_MONITOR
    | DistFlag.DIST_MONITOR_NAME
)

#: Flags the node layer may add once it implements them: SEND_SENDER (the
#: peer then sends SEND_SENDER ``{22, From, To}`` instead of SEND ``{2, '',
#: To}``; both are easy to receive, so it is a choice about what to send).
QUICDIST_OPTIONAL_FLAGS = DistFlag.SEND_SENDER


def expand(flags: int) -> DistFlag:
    """Apply the OTP 25 shorthand: MANDATORY_25_DIGEST implies :data:`MANDATORY_25`.

    Args:
        flags: a flags word as sent on the wire.

    Returns:
        ``flags``, with every flag of :data:`MANDATORY_25` added when the
        digest flag is set.
    """
    value = DistFlag(flags)
    if value & DistFlag.MANDATORY_25_DIGEST:
        value |= MANDATORY_25
    return value


def missing(flags: int, required: int = QUICDIST_REQUIRED) -> DistFlag:
    """The flags of ``required`` that ``flags`` (expanded) lacks; empty if none."""
    return DistFlag(required & ~expand(flags) & 0xFFFFFFFFFFFFFFFF)
