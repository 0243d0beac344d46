"""Long fuzz run of the term decoder with atheris (``make fuzz``).

Every input must either decode or raise DecodeError (nothing else: no
crash, no RecursionError, no IndexError). What decodes must re-encode, and
the re-encoding must be a fixed point: decode(encode(x)) encodes to the same
bytes. The compiled decoder is checked against the pure-Python twin on every
input (same value, or the same error message and offset).

    python tests/fuzz_decode.py -atheris_runs=1000000

The short version that runs in `make test` is the hypothesis test in
tests/test_fastpath_equivalence.py.
"""

from __future__ import annotations

import sys

import atheris


with atheris.instrument_imports():
    from quicdist import Atom, ImproperList, Pid, Reference, _fastpath_py as pure
    from quicdist.errors import DecodeError

try:
    from quicdist import _fastpath as fast
except ImportError:  # pragma: no cover - make fuzz builds the extension first
    sys.exit("quicdist._fastpath is not built; run `make build` first")


def _outcome(module, data):
    try:
        return ("ok", module.decode(data))
    except DecodeError as exc:
        return ("error", str(exc), exc.offset)


def test_one_input(data: bytes) -> None:
    got = _outcome(fast, data)
    want = _outcome(pure, data)
    if got[0] == "ok" and want[0] == "ok":
        encoded = fast.encode(got[1])
        assert encoded == pure.encode(want[1]), (data, encoded)
        again = fast.encode(fast.decode(encoded))
        assert again == encoded, (data, encoded, again)
    else:
        assert got == want, (data, got, want)


def _seeds() -> list[bytes]:
    terms = [
        (6, Pid("a@127.0.0.1", 84, 0, 1), Atom(""), Atom("echo")),
        [1, 2, 3, 1000, -5, 2**70, 1.5, b"bin", "str", Atom("ä")],
        {Atom("k"): [ImproperList([1], 2)], 1: Reference("n@h", 1, (1, 2, 3))},
        [[[[]]]],
    ]
    return [fast.encode(t) for t in terms] + [fast.encode(t, 9) for t in terms]


def main() -> None:
    argv = list(sys.argv)
    if not any(arg.startswith("-seed_inputs") for arg in argv):
        import os
        import tempfile

        corpus = tempfile.mkdtemp(prefix="quicdist-fuzz-")
        for i, seed in enumerate(_seeds()):
            with open(os.path.join(corpus, f"seed{i}"), "wb") as f:
                f.write(seed)
        argv.append(corpus)
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
