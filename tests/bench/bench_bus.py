"""One PUB/SUB hop and one REQ/REP round trip: the codec and bus helpers against bare pyzmq.

    .venv/bin/python -m tests.bench.bench_bus

The payload is a Quote. The bare side sends the same encoded frame bytes with bare pyzmq and does no
encoding, decoding or sequence checks, so the ratio is what common.messages + common.bus add.
Reports median / p99 (microseconds) over N messages each and writes logs/bench/bus.json:
- pubsub_helpers: Publisher.publish(quote) -> poll -> Subscriber.drain() (encode, number, send, receive,
  decode, gap check), as a ServiceLoop runs it; both ends in this process over ipc://
- pubsub_bare: PUB.send_multipart((topic, frame)) -> poll -> SUB.recv_multipart()
- reqrep_helpers: LazyPirateClient.request(quote) -> ReplyServer in another process, which decodes,
  calls an echo handler and encodes the reply; the client decodes it
- reqrep_bare: REQ.send(frame) -> REP echo in another process -> REQ.recv()
- codec: encode(quote) + decode(frame) alone
"""
from __future__ import annotations

import gc
import json
import select
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import zmq

from common.bus import LazyPirateClient, Publisher, Subscriber
from common.messages import Quote, decode, encode, topic_of

ROOT = Path(__file__).resolve().parents[2]
N = 20_000
WARMUP = 1_000
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
    else:
        sock = zmq.Context.instance().socket(zmq.REP)
        sock.bind(ep)
        print("ready", flush=True)
        while True:
            sock.send(sock.recv())
""")


def stats(ns: list[int]) -> dict:
    a = np.array(ns, dtype=np.float64) / 1000.0
    return {"messages": len(a), "median_us": round(float(np.median(a)), 2), "p99_us": round(float(np.percentile(a, 99)), 2),
            "max_us": round(float(a.max()), 1)}


def ratio(helpers: dict, bare: dict) -> dict:
    return {"median": round(helpers["median_us"] / bare["median_us"], 3),
            "p99": round(helpers["p99_us"] / bare["p99_us"], 3),
            "added_median_us": round(helpers["median_us"] - bare["median_us"], 2)}


def pubsub_helpers(d: Path) -> list[int]:
    ep = f"ipc://{d}/helpers.sock"
    pub = Publisher("bench", ep)
    sub = Subscriber("bench", ep, None, topics=[Quote])
    clock = time.perf_counter_ns
    while not sub.recv(20):          # slow joiner: publish until the subscription is live
        pub.publish(QUOTE)
    time.sleep(0.05)
    sub.drain()
    out = []
    for i in range(WARMUP + N):
        t0 = clock()
        pub.publish(QUOTE)
        sub.sock.poll(1000)          # what a ServiceLoop does: poll, then drain the readable socket
        got = sub.drain()
        t1 = clock()
        assert len(got) == 1 and got[0].msg == QUOTE
        if i >= WARMUP:
            out.append(t1 - t0)
    assert sub.stats.gaps == 0 and sub.stats.malformed == 0
    sub.close()
    pub.close()
    return out


def pubsub_bare(d: Path) -> list[int]:
    ep = f"ipc://{d}/bare.sock"
    ctx = zmq.Context.instance()
    pub, sub = ctx.socket(zmq.PUB), ctx.socket(zmq.SUB)
    pub.bind(ep)
    sub.setsockopt(zmq.SUBSCRIBE, b"Quote")
    sub.connect(ep)
    topic, frame = topic_of(QUOTE), encode(QUOTE, seq=1, ts_ns=time.time_ns(), src="bench", epoch=1)
    while True:
        pub.send_multipart((topic, frame))
        if sub.poll(20):
            break
    time.sleep(0.05)
    while sub.poll(0):
        sub.recv_multipart()
    clock = time.perf_counter_ns
    out = []
    for i in range(WARMUP + N):
        t0 = clock()
        pub.send_multipart((topic, frame))
        sub.poll(1000)
        got = sub.recv_multipart()
        t1 = clock()
        assert got[1] == frame
        if i >= WARMUP:
            out.append(t1 - t0)
    pub.close(0)
    sub.close(0)
    return out


def start_server(mode: str, ep: str) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", SERVER, mode, ep], cwd=ROOT, stdout=subprocess.PIPE)
    ready, _, _ = select.select([p.stdout], [], [], 20)
    assert ready and p.stdout.readline().strip() == b"ready", f"{mode} server did not start"
    return p


def reqrep_helpers(d: Path) -> list[int]:
    ep = f"ipc://{d}/rep-helpers.sock"
    server = start_server("helpers", ep)
    try:
        client = LazyPirateClient("bench", ep, timeout_ms=5000, retries=0)
        clock = time.perf_counter_ns
        out = []
        for i in range(WARMUP + N):
            t0 = clock()
            env = client.request(QUOTE)
            t1 = clock()
            assert env.msg == QUOTE
            if i >= WARMUP:
                out.append(t1 - t0)
        client.close()
        return out
    finally:
        server.kill()
        server.wait()
        server.stdout.close()


def reqrep_bare(d: Path) -> list[int]:
    ep = f"ipc://{d}/rep-bare.sock"
    server = start_server("bare", ep)
    try:
        sock = zmq.Context.instance().socket(zmq.REQ)
        sock.connect(ep)
        frame = encode(QUOTE, seq=1, ts_ns=time.time_ns(), src="bench")
        clock = time.perf_counter_ns
        out = []
        for i in range(WARMUP + N):
            t0 = clock()
            sock.send(frame)
            got = sock.recv()
            t1 = clock()
            assert got == frame
            if i >= WARMUP:
                out.append(t1 - t0)
        sock.close(0)
        return out
    finally:
        server.kill()
        server.wait()
        server.stdout.close()


def codec() -> list[int]:
    clock = time.perf_counter_ns
    out = []
    for i in range(WARMUP + N):
        t0 = clock()
        decode(encode(QUOTE, seq=i, ts_ns=i, src="bench", epoch=1))
        t1 = clock()
        if i >= WARMUP:
            out.append(t1 - t0)
    return out


def main() -> dict:
    from loguru import logger
    logger.remove()                  # the helpers log nothing on the happy path; keep stderr quiet anyway
    with tempfile.TemporaryDirectory(prefix="bench-bus-") as tmp:
        d = Path(tmp)
        gc.disable()
        try:
            ps_h, ps_b = stats(pubsub_helpers(d)), stats(pubsub_bare(d))
            rr_h, rr_b = stats(reqrep_helpers(d)), stats(reqrep_bare(d))
            cod = stats(codec())
        finally:
            gc.enable()
    frame = encode(QUOTE, seq=1, ts_ns=time.time_ns(), src="bench", epoch=1)
    result = {
        "payload": "Quote", "frame_bytes": len(frame), "transport": "ipc://",
        "pubsub_helpers": ps_h, "pubsub_bare": ps_b, "pubsub_overhead_ratio": ratio(ps_h, ps_b),
        "reqrep_helpers": rr_h, "reqrep_bare": rr_b, "reqrep_overhead_ratio": ratio(rr_h, rr_b),
        "codec_encode_decode": cod,
        "note": ("bare pyzmq sends the same encoded frame and does no encode/decode; helpers = common.messages codec "
                 "+ common.bus Publisher/Subscriber and LazyPirateClient/ReplyServer; one hop measured "
                 "send-to-receive in one process, the REP server in its own process"),
    }
    out = ROOT / "logs" / "bench" / "bus.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
