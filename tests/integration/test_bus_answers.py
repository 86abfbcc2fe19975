"""A bound REP socket answers every frame and stays usable (issue 15, item 1), over real ipc sockets.

The cases that once wedged a socket for good: a SnapshotRequest whose topics hold an integer
(raised outside the try, no reply), a multipart request (only the first part read, the reply
refused by the REP state machine), a handler answer that cannot be encoded, and raw bytes
below ZeroMQ that left a REP socket readable for a recv that then blocked forever.
The property-based test against every service's sockets is test_socket_fuzz.py.
"""
from __future__ import annotations

import msgpack
import pytest
import zmq

from common.bus import Publisher, ReplyServer
from common.messages import Position, Query, Reply, SnapshotReply, SnapshotRequest, decode, encode

pytestmark = pytest.mark.integration


@pytest.fixture
def ctx():
    c = zmq.Context()
    yield c
    c.destroy(linger=0)


def ask(ctx, endpoint: str, parts: list[bytes], serve) -> object:
    """Send one request, let the server answer it (same thread), return the decoded answer."""
    req = ctx.socket(zmq.REQ)
    req.setsockopt(zmq.LINGER, 0)
    req.connect(endpoint)
    try:
        req.send_multipart(parts)
        server = getattr(serve, "__self__")
        assert (server.snap if isinstance(server, Publisher) else server.sock).poll(3000), "request not delivered"
        serve()
        assert req.poll(3000), "no answer"
        return decode(req.recv()).msg
    finally:
        req.close()


def envelope(type_name: str, body: dict) -> bytes:
    return msgpack.packb({"type": type_name, "v": 1, "seq": 1, "ts": 1, "src": "t", "body": body})


def test_snapshot_request_with_an_integer_topic_is_answered_and_the_socket_stays_usable(ctx, tmp_path):
    pub = Publisher("p", f"ipc://{tmp_path}/pub", f"ipc://{tmp_path}/snap", ctx=ctx)
    pub.publish(Position("CON.F.US.MES.H26", 1, 1, "6050.25"), key="CON.F.US.MES.H26")
    snap = f"ipc://{tmp_path}/snap"
    for topics in ([1], ["Position", 7], [None], [b"Position"]):
        bad = ask(ctx, snap, [envelope("SnapshotRequest", {"topics": topics})], pub.serve_snapshot)
        assert isinstance(bad, Reply) and not bad.ok and "topics holds" in bad.message, (topics, bad)
    good = ask(ctx, snap, [encode(SnapshotRequest(["Position"]), src="t")], pub.serve_snapshot)
    assert isinstance(good, SnapshotReply) and good.epoch == pub.epoch
    assert [decode(f).msg.contract for f in good.frames] == ["CON.F.US.MES.H26"]
    pub.close()


def test_a_multipart_request_is_refused_in_one_answer(ctx, tmp_path):
    pub = Publisher("p", f"ipc://{tmp_path}/pub", f"ipc://{tmp_path}/snap", ctx=ctx)
    rep = ReplyServer("r", f"ipc://{tmp_path}/rep", lambda env: Reply(True, env.msg.what), ctx=ctx)
    frame = encode(Query("status"), src="t")
    for endpoint, serve, valid in ((f"ipc://{tmp_path}/snap", pub.serve_snapshot, encode(SnapshotRequest(), src="t")),
                                   (f"ipc://{tmp_path}/rep", rep.serve_one, frame)):
        bad = ask(ctx, endpoint, [frame, b"second part", b""], serve)
        assert isinstance(bad, Reply) and not bad.ok and "3 parts" in bad.message
        good = ask(ctx, endpoint, [valid], serve)
        assert isinstance(good, (Reply, SnapshotReply)) and getattr(good, "ok", True)
    pub.close()
    rep.close()


def test_an_answer_that_cannot_be_encoded_becomes_an_error_reply(ctx, tmp_path):
    answers = iter([object(), Reply(True, "fine")])
    rep = ReplyServer("r", f"ipc://{tmp_path}/rep", lambda env: next(answers), ctx=ctx)
    ep = f"ipc://{tmp_path}/rep"
    bad = ask(ctx, ep, [encode(Query("status"), src="t")], rep.serve_one)
    assert isinstance(bad, Reply) and not bad.ok and "could not be encoded" in bad.message
    good = ask(ctx, ep, [encode(Query("status"), src="t")], rep.serve_one)
    assert good == Reply(True, "fine")
    rep.close()


def test_a_huge_bad_field_gets_a_short_answer(ctx, tmp_path):
    rep = ReplyServer("r", f"ipc://{tmp_path}/rep", lambda env: Reply(True), ctx=ctx)
    bad = ask(ctx, f"ipc://{tmp_path}/rep", [envelope("Query", {"what": 1, "params": {}})], rep.serve_one)
    assert not bad.ok
    huge = ask(ctx, f"ipc://{tmp_path}/rep", [envelope("Query", {"what": [0] * 100_000})], rep.serve_one)
    assert not huge.ok and len(huge.message) < 400, len(huge.message)
    rep.close()


def test_raw_bytes_below_zeromq_neither_block_the_server_nor_steal_the_next_answer(ctx, tmp_path):
    """Found by test_socket_fuzz: these bytes (no ZMTP greeting) are read by libzmq as a ZMTP 1.0
    peer's identity and a message part. A REP socket then polled readable, its recv blocked
    forever (the service loop with it), and the next caller's answer went to the dead peer."""
    import socket
    import time
    data = (b'\x86\xa4type\xaaPrediction\xa1v\x83\xa0\x81\xfe\xc3\xae\xc3\x8b\xc2\xa2\xf2\x99\x8b\xb7\xc2\x91\xf2\x92\xa4\x9e\xb2'
            b'\xc3\xa8\xf4\x8d\x99\x8b\x1f\xf2\xa8\xae\x9c7\xe7\x8d\xa4\xc2\xb8x\xa1V\x82\xfb\xcb\x00\x00\x00\x00\x00\x00\x00\x00\xb2\xf1\xa4\xb1\x9c\xc2\x9f\xc2\xbc'
            b'^\xc3\xacZ\xf3\xbe\x89\x8b\xc2\xb3\xc0\xa3seq\xc0\xa3src\xa4fuzz\xa4body\x87\xa8contract'
            b'\x90\xa9direction\x92\x83\xabDA\xc2\x8a\xc2\xb8\xc2\x9c\x13\xc3\x8e\xc0\xb2\xf1\xb2\x95\x9f\xc3\xa7\x06\xf1\x89\xba\x97\xc2\xbc'
            b'\x12\xc3\x8d\xc2\xb4\xc2\xa0\xc0\xc0\xadmodel_version\xc0\xabclose_ticks\xc0\xacsp'
            b'read_ticks\xc0\xaafeature_us\x90\xa0\xc0\xa2ep\xcdX\x1f')
    rep = ReplyServer("r", f"ipc://{tmp_path}/rep", lambda env: Reply(True, "fine"), ctx=ctx)
    for keep_open in (False, True):
        raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        raw.connect(f"{tmp_path}/rep")
        raw.sendall(data)
        time.sleep(0.2)
        if not keep_open:
            raw.close()
            time.sleep(0.2)
        while rep.sock.poll(200):
            rep.serve_one()        # must return, whatever libzmq made of the bytes
        good = ask(ctx, f"ipc://{tmp_path}/rep", [encode(Query("status"), src="t")], rep.serve_one)
        assert good == Reply(True, "fine"), keep_open
        raw.close()
    rep.close()
