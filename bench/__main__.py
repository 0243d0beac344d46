"""``python -m bench SUITE [--quick] [--impl ...]``: ``etf``, ``framing``, ``dist``, ``carrier``,
``node``, ``streams`` or ``interop``.

``etf``: the term codec, quicdist's two paths against other Python ETF
codecs (``--impl cython|python|all|ID,ID...``). ``framing``: distribution
framing and the send scheduler, quicdist's two paths side by side
(``--impl cython|python|all``). ``dist``: encode_message / decode_message of
distribution messages (SEND, REG_SEND, MONITOR_P) on quicdist's two codec
paths side by side (``--impl cython|python|all``). ``carrier``: the QUIC carrier over loopback
(bulk throughput, round-trip latency, small-frame rate), quicdist against a
plain aioquic asyncio baseline, each server in its own process
(``--impl quicdist|aioquic|all``). ``node``: two distribution nodes over
loopback, the peer in its own process (message throughput both ways,
mailbox / ping / rpc round trips, connection setup). ``streams``: user streams
between two nodes, the peer in its own process (one-stream bulk next to the
plain-aioquic baseline, 16 parallel streams, open-to-first-byte, urgent-stream
round trips idle and under bulk load). ``interop``: a quicdist node and two
``erl`` nodes over TCP distribution (Python <-> Erlang message throughput and
ping-pong round trips next to Erlang <-> Erlang, in the same run; needs erl,
erlc and epmd).

Prints one JSON document to stdout (progress goes to stderr when it is a
terminal). Exit status 1 only when a quicdist path gives a wrong answer;
timings never fail anything.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys

from . import carrier, dist, etf, framing, interop, node, streams


def _impls(text: str, valid: tuple[str, ...]) -> tuple[str, ...]:
    if text == "all":
        return valid
    ids = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [i for i in ids if i not in valid]
    if not ids or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown implementation {', '.join(unknown) or text!r}; "
            f"choose from all, {', '.join(valid)} (comma-separated)")
    return ids


SUITES = {
    "etf": (etf, "External Term Format codec: quicdist vs alternatives"),
    "framing": (framing, "distribution framing and send scheduler: compiled vs pure"),
    "dist": (dist, "distribution messages (encode_message/decode_message): compiled vs pure"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench",
                                     description="quicdist benchmarks; JSON on stdout")
    sub = parser.add_subparsers(dest="suite", required=True, metavar="SUITE")
    for name, (module, help_text) in SUITES.items():
        ids = module.IMPL_IDS
        p = sub.add_parser(name, help=help_text,
                           description=module.__doc__.splitlines()[0] if module.__doc__ else None)
        p.add_argument("--quick", action="store_true",
                       help="2 repeats of ~10 ms each instead of 5 of ~150 ms (smoke runs)")
        p.add_argument("--impl", type=functools.partial(_impls, valid=ids), default=ids,
                       metavar="IMPL",
                       help="all (default) or a comma-separated list of " + ", ".join(ids))
        p.add_argument("--repeats", type=int, default=None, help="override the repeat count")
        p.add_argument("--target", type=float, default=None,
                       help="override the seconds per repeat used to choose `number`")
        p.add_argument("--indent", type=int, default=2, help="JSON indent (default 2)")
    p = sub.add_parser("carrier", help="QUIC carrier over loopback: quicdist vs aioquic",
                       description=carrier.__doc__.splitlines()[0] if carrier.__doc__ else None)
    carrier.add_arguments(p)
    p.add_argument("--impl", type=functools.partial(_impls, valid=carrier.IMPL_IDS),
                   default=carrier.IMPL_IDS, metavar="IMPL",
                   help="all (default) or a comma-separated list of "
                   + ", ".join(carrier.IMPL_IDS))
    p.add_argument("--indent", type=int, default=2, help="JSON indent (default 2)")
    p = sub.add_parser("node", help="distribution nodes over loopback: messages, calls, connects",
                       description=node.__doc__.splitlines()[0] if node.__doc__ else None)
    node.add_arguments(p)
    p.add_argument("--indent", type=int, default=2, help="JSON indent (default 2)")
    p = sub.add_parser("streams", help="user streams between two nodes over loopback",
                       description=streams.__doc__.splitlines()[0] if streams.__doc__ else None)
    streams.add_arguments(p)
    p.add_argument("--indent", type=int, default=2, help="JSON indent (default 2)")
    p = sub.add_parser("interop", help="Python <-> Erlang over TCP next to Erlang <-> Erlang",
                       description=interop.__doc__.splitlines()[0] if interop.__doc__ else None)
    interop.add_arguments(p)
    p.add_argument("--indent", type=int, default=2, help="JSON indent (default 2)")
    args = parser.parse_args(argv)

    if args.suite == "streams":
        doc = streams.run(quick=args.quick, settings=streams.settings_from_args(args),
                          progress=sys.stderr.isatty())
        return _emit(doc, args.indent)

    if args.suite == "interop":
        doc = interop.run(quick=args.quick, settings=interop.settings_from_args(args),
                          progress=sys.stderr.isatty())
        return _emit(doc, args.indent)
    if args.suite == "node":
        doc = node.run(quick=args.quick, settings=node.settings_from_args(args),
                       progress=sys.stderr.isatty())
        return _emit(doc, args.indent)
    if args.suite == "carrier":
        doc = carrier.run(args.impl, quick=args.quick, settings=carrier.settings_from_args(args),
                          progress=sys.stderr.isatty())
        return _emit(doc, args.indent)
    module = SUITES[args.suite][0]
    base = etf.QUICK if args.quick else etf.DEFAULT
    settings = etf.Settings(repeats=args.repeats or base.repeats,
                            target=args.target or base.target)
    if settings.repeats < 1 or settings.target <= 0:
        parser.error("--repeats must be >= 1 and --target > 0")
    doc = module.run(args.impl, quick=args.quick, settings=settings,
                     progress=sys.stderr.isatty())
    return _emit(doc, args.indent)


def _emit(doc: dict, indent: int) -> int:
    json.dump(doc, sys.stdout, indent=indent, ensure_ascii=False)
    sys.stdout.write("\n")
    if doc["errors"]:
        for err in doc["errors"]:
            print(f"bench: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
