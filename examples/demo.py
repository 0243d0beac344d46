"""quicdist demo (make demo).

1. Python values becoming Erlang terms and back, on whichever codec is active.
2. Two endpoints of the QUIC carrier on 127.0.0.1 with development
   certificates (verified both ways): terms exchanged as distribution
   frames, and a user stream echoed back.
3. Two distribution nodes, alice and bob, on 127.0.0.1 with the same
   certificates: the handshake, ping, messages to a registered mailbox,
   rpc, a user stream alice opens and a Python acceptor on bob echoes,
   links and monitors, and node-down detection.
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


def node_demo() -> None:
    import pathlib
    import threading
    import time

    from quicdist.certs import make_dev_certs

    certs = pathlib.Path(__file__).resolve().parent.parent / "certs"
    made = make_dev_certs(certs, ["alice@127.0.0.1", "bob@127.0.0.1"])
    book: dict[str, tuple[str, int]] = {}

    class Book:  # a custom discovery object: lookup(node) -> (host, port)
        def lookup(self, node: str) -> tuple[str, int]:
            return book[node]

    def node(name: str) -> quicdist.Node:
        return quicdist.Node(
            name, cookie="demo-cookie", port=0, host="127.0.0.1",
            certfile=str(made[name].certfile), keyfile=str(made[name].keyfile),
            cafile=str(made["ca"].certfile), verify="verify_peer",
            discovery=Book(), dns=False, net_ticktime=4)

    print("\nTwo distribution nodes over QUIC (handshake v6, cookie, verify_peer)")
    with node("alice@127.0.0.1") as alice, node("bob@127.0.0.1") as bob:
        book[alice.name] = ("127.0.0.1", alice.port)
        book[bob.name] = ("127.0.0.1", bob.port)

        started = time.monotonic()
        print(f"  alice pings bob: {alice.ping(bob.name)} "
              f"({1000 * (time.monotonic() - started):.1f} ms, connect included); "
              f"alice.nodes() = {alice.nodes()}")

        echo = bob.mailbox("echo")

        def serve() -> None:  # a registered process on bob: echoes {From, Msg}
            while True:
                try:
                    sender, msg = echo.receive(timeout=10)
                except quicdist.errors.MailboxClosed:
                    return
                echo.send(sender, (Atom("echo"), msg))

        threading.Thread(target=serve, daemon=True).start()
        me = alice.mailbox()
        for msg in [Atom("hello"), {"nested": [1, 2.5, b"bin"]}, 2**80]:
            me.send(("echo", bob.name), (me.pid, msg))
            print(f"  alice -> {{echo, bob}}: {msg!r:<36} reply {me.receive(timeout=5)!r}")

        count = 20_000
        sink = bob.mailbox("sink")
        started = time.monotonic()
        for i in range(count):
            me.send(("sink", bob.name), i)
        assert [sink.receive(timeout=10) for _ in range(count)] == list(range(count))
        elapsed = time.monotonic() - started
        print(f"  {count} messages alice -> bob in order, none lost: "
              f"{count / elapsed:,.0f} msg/s")

        bob.register_module("demo", {"add": lambda a, b: a + b})
        answer = alice.rpc(bob.name, "demo", "add", [40, 2])
        print(f"  alice.rpc(bob, demo, add, [40, 2]) = {answer}")
        try:
            alice.rpc(bob.name, "demo", "missing", [])
        except quicdist.errors.RpcError as exc:
            print(f"  an undefined function: RpcError, reason {exc.reason!r}")

        # A user stream: raw bytes beside the distribution messages. Bob's
        # acceptor (a Python thread) echoes every stream alice opens.
        acceptor = bob.accept_streams(alice.name)

        def echo_streams() -> None:
            while True:
                try:
                    stream = acceptor.accept(timeout=10)
                except quicdist.errors.QuicDistError:
                    return
                for chunk in stream:  # until alice's FIN
                    stream.send(chunk)
                stream.close()

        threading.Thread(target=echo_streams, daemon=True).start()
        payload = bytes(range(256)) * 4096  # 1 MiB
        started = time.monotonic()
        with alice.open_stream(bob.name, priority=64) as stream:
            stream.send(payload)
        echoed = b"".join(stream)  # the echo, up to bob's FIN
        elapsed = time.monotonic() - started
        print(f"  user stream {stream.stream_id} (priority 64), opened by alice, echoed by "
              f"bob's acceptor: {len(echoed)} bytes back intact: {echoed == payload} "
              f"({1000 * elapsed:.0f} ms); closed both ways: {stream.closed}")
        acceptor.close()

        watcher = alice.mailbox()
        watcher.monitor(echo.pid)
        watcher.link(sink.pid)
        # Signals between two processes keep their order: once echo answers,
        # the monitor and the link (sent before) are in place on bob.
        watcher.send(echo.pid, (watcher.pid, Atom("sync")))
        watcher.receive(timeout=5)
        echo.exit(Atom("demo_done"))
        print(f"  monitor fires when bob's echo exits: {watcher.receive(timeout=5)!r}")
        started = time.monotonic()
        bob.stop()
        print(f"  bob stops: the link fires {watcher.receive(timeout=10)!r} after "
              f"{1000 * (time.monotonic() - started):.0f} ms; alice.nodes() = {alice.nodes()}")


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
    node_demo()


if __name__ == "__main__":
    main()
