"""One PUB/SUB hop and one REQ/REP round trip: the codec and bus helpers against bare pyzmq.

    .venv/bin/python -m tests.bench.bench_bus

The payload is a Quote. The bare side sends the same encoded frame bytes with bare pyzmq and does no
encoding, decoding or sequence checks, so the ratio is what common.messages + common.bus add.
Runs every operation flat out (BENCH_N each, back to back) and at the live cadence (one operation per
1 s idle period, helpers and bare taking turns; tests/bench/_kit.py). Reports median / p99
(microseconds), the ratio to the bare floor of the same run, and writes logs/bench/bus.json:
- pubsub_helpers: Publisher.publish(quote) -> poll -> Subscriber.drain() (encode, number, send, receive,
  decode, gap check), as a ServiceLoop runs it; both ends in this process over ipc://
- pubsub_bare: PUB.send_multipart((topic, frame)) -> poll -> SUB.recv_multipart()
- reqrep_helpers: LazyPirateClient.request(quote) -> ReplyServer in another process, which decodes,
  calls an echo handler and encodes the reply; the client decodes it
- reqrep_bare: REQ.send(frame) -> REP echo in another process -> REQ.recv()
- reqrep_bare_router: the same with a bare pyzmq ROUTER echoing the whole message (envelope included)
  instead of the REP: the socket pattern the ReplyServer uses, with none of our code. The ratio to
  it is what our code adds; the ratio to reqrep_bare also holds the pattern's own cost
- codec: encode(quote) + decode(frame) alone, against raw msgpack packb + unpackb of the same map
"""
from __future__ import annotations

import dataclasses
import gc
import os
import select
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import msgpack
import zmq

from common.bus import LazyPirateClient, Publisher, Subscriber
from common.messages import Quote, decode, encode, topic_of
from tests.bench._kit import ROOT, back_to_back, cadence, machine, ratio, stats, take_turns, write

N = int(os.environ.get("BENCH_N", "3000"))
QUOTE = Quote("CON.F.US.MES.H26", 24201, 24202, 24201, 1_764_081_000_123_456_789, 1_764_081_000_123_901_000)

SERVER = textwrap.dedent("""
    import sys, zmq
    mode, ep = sys.argv[1], sys.argv[2]
    if mode == "helpers":
        from common.bus import ReplyServer
        server = ReplyServer("bench", ep, lambda env: env.msg)
        print("ready", flush=True)
        while True:
            server.serve_one(wait_ms=-1)
    elif mode == "router":
        sock = zmq.Context.instance().socket(zmq.ROUTER)
        sock.bind(ep)
        print("ready", flush=True)
        while True:
            sock.send_multipart(sock.recv_multipart())
    else:
        sock = zmq.Context.instance().socket(zmq.REP)
        sock.bind(ep)
        print("ready", flush=True)
        while True:
            sock.send(sock.recv())
""")


class PubSub:
    """One PUB/SUB pair over ipc://, helpers (Publisher/Subscriber with the codec) or bare pyzmq
    sending the same encoded frame. hop() = send -> poll -> receive, in ns."""

    def __init__(self, d: Path, helpers: bool):
        ep = f"ipc://{d}/{'helpers' if helpers else 'bare'}.sock"
        self.helpers = helpers
        if helpers:
            self.pub = Publisher("bench", ep)
            self.sub = Subscriber("bench", ep, None, topics=[Quote])
            while not self.sub.recv(20):          # slow joiner: publish until the subscription is live
                self.pub.publish(QUOTE)
            time.sleep(0.05)
            self.sub.drain()
        else:
            ctx = zmq.Context.instance()
            self.pub, self.sub = ctx.socket(zmq.PUB), ctx.socket(zmq.SUB)
            self.pub.bind(ep)
            self.sub.setsockopt(zmq.SUBSCRIBE, b"Quote")
            self.sub.connect(ep)
            self.topic, self.frame = topic_of(QUOTE), encode(QUOTE, seq=1, ts_ns=time.time_ns(), src="bench", epoch=1)
            while True:
                self.pub.send_multipart((self.topic, self.frame))
                if self.sub.poll(20):
                    break
            time.sleep(0.05)
            while self.sub.poll(0):
                self.sub.recv_multipart()

    def hop(self) -> int:
        clock = time.perf_counter_ns
        if self.helpers:
            t0 = clock()
            self.pub.publish(QUOTE)
            self.sub.sock.poll(1000)          # what a ServiceLoop does: poll, then drain the readable socket
            got = self.sub.drain()
            t1 = clock()
            assert len(got) == 1 and got[0].msg == QUOTE
        else:
            t0 = clock()
            self.pub.send_multipart((self.topic, self.frame))
            self.sub.poll(1000)
            got = self.sub.recv_multipart()
            t1 = clock()
            assert got[1] == self.frame
        return t1 - t0

    def close(self) -> None:
        if self.helpers:
            assert self.sub.stats.gaps == 0 and self.sub.stats.malformed == 0
            self.sub.close()
            self.pub.close()
        else:
            self.pub.close(0)
            self.sub.close(0)


def start_server(mode: str, ep: str) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", SERVER, mode, ep], cwd=ROOT, stdout=subprocess.PIPE)
    ready, _, _ = select.select([p.stdout], [], [], 20)
    assert ready and p.stdout.readline().strip() == b"ready", f"{mode} server did not start"
    return p


class ReqRep:
    """A REQ client and a server in another process: helpers (LazyPirateClient -> ReplyServer,
    decode + echo handler + encode), or a bare REQ and a bare REP ("bare") or ROUTER ("router")
    echoing the same frame."""

    def __init__(self, d: Path, mode: str):
        ep = f"ipc://{d}/rep-{mode}.sock"
        helpers = self.helpers = mode == "helpers"
        self.server = start_server(mode, ep)
        if helpers:
            self.client = LazyPirateClient("bench", ep, timeout_ms=5000, retries=0)
        else:
            self.sock = zmq.Context.instance().socket(zmq.REQ)
            self.sock.connect(ep)
            self.frame = encode(QUOTE, seq=1, ts_ns=time.time_ns(), src="bench")

    def hop(self) -> int:
        clock = time.perf_counter_ns
        if self.helpers:
            t0 = clock()
            env = self.client.request(QUOTE)
            t1 = clock()
            assert env.msg == QUOTE
        else:
            t0 = clock()
            self.sock.send(self.frame)
            got = self.sock.recv()
            t1 = clock()
            assert got == self.frame
        return t1 - t0

    def close(self) -> None:
        if self.helpers:
            self.client.close()
        else:
            self.sock.close(0)
        self.server.kill()
        self.server.wait()
        self.server.stdout.close()


def codec_once() -> int:
    clock = time.perf_counter_ns
    t0 = clock()
    decode(encode(QUOTE, seq=1, ts_ns=2, src="bench", epoch=1))
    return clock() - t0


def raw_msgpack_once() -> int:
    """The floor of the codec: msgpack alone over the same map, no checks."""
    clock = time.perf_counter_ns
    t0 = clock()
    msgpack.unpackb(msgpack.packb(RAW_MAP, use_bin_type=True), raw=False)
    return clock() - t0


RAW_MAP = {"type": "Quote", "v": 1, "seq": 1, "ts": 2, "src": "bench", "ep": 1, "hops": {},
           "body": {f.name: getattr(QUOTE, f.name) for f in dataclasses.fields(Quote)}}


def summarise(samples: dict[str, list[int]], live: bool) -> dict:
    s = {k: stats(v) for k, v in samples.items()}
    return {"cadence": cadence(live), "unit": "us",
            "pubsub_helpers": s["pubsub_helpers"], "pubsub_bare": s["pubsub_bare"],
            "pubsub_ratio_to_bare": ratio(s["pubsub_helpers"], s["pubsub_bare"]),
            "reqrep_helpers": s["reqrep_helpers"], "reqrep_bare": s["reqrep_bare"],
            "reqrep_ratio_to_bare": ratio(s["reqrep_helpers"], s["reqrep_bare"]),
            "reqrep_bare_router": s["reqrep_bare_router"],
            "reqrep_ratio_to_bare_router": ratio(s["reqrep_helpers"], s["reqrep_bare_router"]),
            "codec_encode_decode": s["codec"], "codec_raw_msgpack": s["raw_msgpack"],
            "codec_ratio_to_raw_msgpack": ratio(s["codec"], s["raw_msgpack"])}


def main() -> dict:
    from loguru import logger
    logger.remove()                  # the helpers log nothing on the happy path; keep stderr quiet anyway
    result = {"bench": "bus", "machine": machine(), "payload": "Quote", "transport": "ipc://"}
    with tempfile.TemporaryDirectory(prefix="bench-bus-") as tmp:
        d = Path(tmp)
        ends = {"pubsub_helpers": PubSub(d, True), "pubsub_bare": PubSub(d, False),
                "reqrep_helpers": ReqRep(d, "helpers"), "reqrep_bare": ReqRep(d, "bare"),
                "reqrep_bare_router": ReqRep(d, "router")}
        ops = {name: e.hop for name, e in ends.items()} | {"codec": codec_once, "raw_msgpack": raw_msgpack_once}
        gc.disable()
        try:
            result["flat"] = summarise(back_to_back(ops, N), live=False)
            result["live"] = summarise(take_turns(ops), live=True)
        finally:
            gc.enable()
            for e in ends.values():
                e.close()
    result["frame_bytes"] = len(encode(QUOTE, seq=1, ts_ns=time.time_ns(), src="bench", epoch=1))
    result["note"] = ("bare pyzmq sends the same encoded frame and does no encode/decode; helpers = "
                      "common.messages codec + common.bus Publisher/Subscriber and LazyPirateClient/ReplyServer; "
                      "PUB/SUB measured send-to-receive in one process, the REP servers in their own processes. "
                      "REQ/REP has two floors: bare REQ -> REP (reqrep_bare) and bare REQ -> ROUTER "
                      "(reqrep_bare_router, the ReplyServer's socket pattern with none of our code). "
                      "Live: one hop per idle period, helpers and bare taking turns.")
    write("bus", result)
    return result


if __name__ == "__main__":
    main()
