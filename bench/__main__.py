"""``python -m bench etf [--quick] [--impl cython|python|all|ID,ID...]``.

Prints one JSON document to stdout (progress goes to stderr when it is a
terminal). Exit status 1 only when a quicdist path gives a wrong answer;
timings never fail anything.
"""

from __future__ import annotations

import argparse
import json
import sys

from . import etf


def _impls(text: str) -> tuple[str, ...]:
    if text == "all":
        return etf.IMPL_IDS
    ids = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [i for i in ids if i not in etf.IMPL_IDS]
    if not ids or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown implementation {', '.join(unknown) or text!r}; "
            f"choose from all, {', '.join(etf.IMPL_IDS)} (comma-separated)")
    return ids


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench",
                                     description="quicdist benchmarks; JSON on stdout")
    sub = parser.add_subparsers(dest="suite", required=True, metavar="SUITE")
    p = sub.add_parser("etf", help="External Term Format codec: quicdist vs alternatives",
                       description=etf.__doc__.splitlines()[0] if etf.__doc__ else None)
    p.add_argument("--quick", action="store_true",
                   help="2 repeats of ~10 ms each instead of 5 of ~150 ms (smoke runs)")
    p.add_argument("--impl", type=_impls, default=etf.IMPL_IDS, metavar="IMPL",
                   help="cython, python or all (default), or a comma-separated list of "
                        f"{', '.join(etf.IMPL_IDS)}")
    p.add_argument("--repeats", type=int, default=None, help="override the repeat count")
    p.add_argument("--target", type=float, default=None,
                   help="override the seconds per repeat used to choose `number`")
    p.add_argument("--indent", type=int, default=2, help="JSON indent (default 2)")
    args = parser.parse_args(argv)

    base = etf.QUICK if args.quick else etf.DEFAULT
    settings = etf.Settings(repeats=args.repeats or base.repeats,
                            target=args.target or base.target)
    if settings.repeats < 1 or settings.target <= 0:
        parser.error("--repeats must be >= 1 and --target > 0")
    doc = etf.run(args.impl, quick=args.quick, settings=settings,
                  progress=sys.stderr.isatty())
    json.dump(doc, sys.stdout, indent=args.indent, ensure_ascii=False)
    sys.stdout.write("\n")
    if doc["errors"]:
        for err in doc["errors"]:
            print(f"bench: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
