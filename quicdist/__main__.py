"""Command-line tools: ``python -m quicdist <command>``.

    python -m quicdist certs DIR [--node NAME ...]   dev CA + node certificates
    python -m quicdist version
"""

from __future__ import annotations

import argparse
import sys


def _certs(args: argparse.Namespace) -> int:
    from .certs import make_dev_certs

    names = args.node or ["node"]
    made = make_dev_certs(args.directory, names)
    for label, paths in made.items():
        print(f"{label}: {paths.certfile} (key {paths.keyfile})")
    return 0


def main(argv: list[str] | None = None) -> int:
    from . import USING_EXTENSION, __version__

    parser = argparse.ArgumentParser(prog="python -m quicdist", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    certs = sub.add_parser("certs", help="write a development CA and node certificates")
    certs.add_argument("directory", help="where to write the PEM files")
    certs.add_argument("--node", action="append", metavar="NAME",
                       help="node name to make a certificate for (repeatable; default: node)")
    sub.add_parser("version", help="print the version and which codec is active")
    args = parser.parse_args(argv)
    if args.command == "certs":
        return _certs(args)
    print(f"quicdist {__version__} ({'cython' if USING_EXTENSION else 'pure python'} fast path)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
