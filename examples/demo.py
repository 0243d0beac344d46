"""quicdist demo (make demo).

1. Python values becoming Erlang terms and back, on whichever codec is active.
2. Two endpoints of the QUIC carrier on 127.0.0.1 with development
   certificates (verified both ways): terms exchanged as distribution
   frames, and a user stream echoed back. The node layer (handshake, ping,
   mailboxes) arrives with the next issue and extends this demo.
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


def carrier_demo() -> None:
    import pathlib
    import time

    from quicdist.certs import make_dev_certs
    from quicdist.events import DistFrames, UserStreamData
    from quicdist.sync import Listener, connect
    from quicdist.tls import TLSConfig

    certs = pathlib.Path(__file__).resolve().parent.parent / "certs"
    made = make_dev_certs(certs, ["alice@127.0.0.1", "bob@127.0.0.1"])
    ca = str(made["ca"].certfile)

    def tls(name: str) -> TLSConfig:
        return TLSConfig(str(made[name].certfile), str(made[name].keyfile), ca, "verify_peer")

    print(f"\nQUIC carrier, dev certificates in {certs}/ (CA + two nodes, verify_peer both ways)")

    def echo(conn, event):  # runs on bob's I/O thread
        if isinstance(event, DistFrames):
            for frame in event.frames:
                conn.send_dist(quicdist.encode(("reply", quicdist.decode(frame))))
        elif isinstance(event, UserStreamData):
            conn.stream_outbox(event.stream_id).write(event.data.upper(), fin=event.fin)

    with Listener("127.0.0.1", 0, tls=tls("bob@127.0.0.1"), on_event=echo) as bob:
        started = time.monotonic()
        with connect("127.0.0.1", bob.port, tls=tls("alice@127.0.0.1"), timeout=10) as alice:
            hello = alice.next_event(10)
            print(f"  alice -> bob: connected in {1000 * (time.monotonic() - started):.1f} ms, "
                  f"ALPN {hello.alpn}, bob's certificate {hello.peer_subject}")
            for term in [(Atom("ping"), 1), {"n": [1, 2.5]}, 2**70]:
                alice.send_dist(quicdist.encode(term))
                reply = alice.next_event(10)
                print(f"  sent {term!r:<28} got back {quicdist.decode(reply.frames[0])!r}")
            sid, outbox = alice.open_stream(priority=64)
            outbox.write(b"hello over a user stream", fin=True, timeout=10)
            data = b""
            while True:
                event = alice.next_event(10)
                if isinstance(event, UserStreamData):
                    data += event.data
                    if event.fin:
                        break
            print(f"  user stream {sid} (priority 64) echoed: {data!r}")
            print(f"  datagram size after path-MTU discovery: {alice.protocol.datagram_size} bytes")


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
    carrier_demo()


if __name__ == "__main__":
    main()
