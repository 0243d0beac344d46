"""quicdist demo (make demo).

Today quicdist has its term codec; the two-node demo (certificates, ping,
messages, a user stream) grows here as the carrier and node land. This shows
Python values becoming Erlang terms and back, on whichever codec is active.
"""

from __future__ import annotations

import quicdist
from quicdist import Atom, ImproperList, Pid, Reference


def show(label: str, value: object) -> None:
    data = quicdist.encode(value)
    back = quicdist.decode(data)
    hexed = data.hex(" ")
    if len(hexed) > 60:
        hexed = hexed[:57] + "..."
    shown = repr(back)
    if len(shown) > 70:
        shown = shown[:67] + "..."
    print(f"  {label:<30} {len(data):>4} bytes  {hexed}")
    print(f"  {'':<30} -> {shown}")


def main() -> None:
    impl = "Cython fast path" if quicdist.USING_EXTENSION else "pure-Python twin"
    print(f"quicdist {quicdist.__version__}: term codec on the {impl}\n")
    me = Pid("demo@127.0.0.1", 84, 0, 1)
    print("Python values as Erlang terms (and what they decode back to):")
    show("control tuple {6,Pid,'',echo}", (6, me, Atom(""), Atom("echo")))
    show("str -> UTF-8 binary", "héllo")
    show("None -> undefined", None)
    show("list of bytes -> string", [104, 105])
    show("dict -> map", {Atom("seq"): 1, "key": [1.5, True]})
    show("bignum", 2**100)
    show("gen_server alias tag", ImproperList([Atom("alias")], Reference("demo@127.0.0.1", 1,
                                                                              (1, 2, 3))))
    compressed = quicdist.encode([Atom("same")] * 1000, 6)
    print(f"\n  1000 identical atoms compressed like term_to_binary(T, [compressed]): "
          f"{len(compressed)} bytes instead of {len(quicdist.encode([Atom('same')] * 1000))}")
    try:
        quicdist.decode(b"\x83m\xff\xff\xff\xffabc")
    except quicdist.errors.DecodeError as exc:
        print(f"  hostile input is refused with a typed error: DecodeError: {exc}")


if __name__ == "__main__":
    main()
