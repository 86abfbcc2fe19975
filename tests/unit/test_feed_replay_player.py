"""Replay player: same path as the live feed, event-time heartbeats, --from/--to, pacing."""
from __future__ import annotations

from common.messages import FeedStatus, Quote, Trade
from common.recording import Record
from common.ticks.feed_core import FeedCore
from services.replay.player import SECOND, Player

C = "CON.F.US.MES.H26"
T0 = 1_768_491_045 * SECOND


def recs():
    out = [Record(T0 - 5, "#status", ["subscribed", ""])]
    for i, dt in enumerate([0, 0.2, 1.5, 40.0]):
        t = T0 + int(dt * SECOND)
        out.append(Record(t, "GatewayQuote", [C, {"bestBid": 5000 + i * 0.25, "bestAsk": 5000.25 + i * 0.25}]))
        out.append(Record(t, "GatewayTrade", [C, [{"price": 5000.25 + i * 0.25, "volume": 1, "type": 0}]]))
    return out


def play(**kw):
    sent, hbs = [], []
    core = FeedCore(C, lambda m, **k: sent.append((m, k.get("key"), k.get("ts_ns"))))
    p = Player(core, lambda m, **k: sent.append((m, k.get("key"), k.get("ts_ns"))), hbs.append,
               sleep=lambda s: None, **kw)
    stats = p.run(recs())
    return sent, hbs, stats


def test_same_messages_in_the_same_order_every_time():
    a, hb_a, _ = play()
    b, hb_b, _ = play()
    assert a == b and hb_a == hb_b
    assert isinstance(a[0][0], FeedStatus) and a[0][1] == "feed"
    kinds = [type(m).__name__ for m, _, _ in a]
    assert kinds == ["FeedStatus"] + ["Quote", "Trade"] * 4
    q = a[1][0]
    assert isinstance(q, Quote) and q.recv_ns == T0 and a[1][1] == C and a[1][2] == q.exch_ns


def test_heartbeats_every_event_second_and_capped_in_long_gaps():
    _, hbs, stats = play(gap_heartbeats=3)
    # whole seconds crossed: T0 (status at T0-5ns, then ticks at T0), T0+1 (tick at 1.5 s), then
    # a 38.5 s gap: 3 heartbeats and one at the last whole second before the next record
    assert hbs == [T0, T0 + SECOND, T0 + 2 * SECOND, T0 + 3 * SECOND, T0 + 4 * SECOND, T0 + 40 * SECOND]
    assert stats.heartbeats == len(hbs)


def test_from_to_window_skips_but_keeps_quote_state():
    sent, _, stats = play(start_ns=T0 + SECOND, end_ns=T0 + 2 * SECOND)
    trades = [m for m, _, _ in sent if isinstance(m, Trade)]
    assert len(trades) == 1 and trades[0].exch_ns == T0 + int(1.5 * SECOND)
    assert stats.skipped == 5


def test_speed_paces_by_event_time():
    slept = []
    clock = [0.0]
    core = FeedCore(C, lambda m, **k: None)
    p = Player(core, lambda m, **k: None, lambda t: None, speed=10.0,
               sleep=lambda s: (slept.append(s), clock.__setitem__(0, clock[0] + s)), monotonic=lambda: clock[0])
    p.run(recs())
    assert abs(sum(slept) - 4.0) < 1e-6             # 40 s of events at 10x


def test_max_speed_is_rate_capped():
    slept = []
    clock = [0.0]
    core = FeedCore(C, lambda m, **k: None)
    many = [Record(T0 + i, "GatewayTrade", [C, [{"price": 5000.25, "volume": 1}]]) for i in range(1000)]
    p = Player(core, lambda m, **k: None, lambda t: None, max_rate=1000, burst=100,
               sleep=lambda s: (slept.append(s), clock.__setitem__(0, clock[0] + s)), monotonic=lambda: clock[0])
    p.run(many)
    assert abs(sum(slept) - 1.0) < 1e-6              # 1000 messages at 1000/s
    assert len(slept) == 10                          # in bursts of 100


def test_replay_reads_the_feeds_sanitiser_keys_with_the_feeds_defaults():
    """Replay takes the sanitiser keys from the `feed:` section (through its own model, so it
    imports nothing of the feed service); the two must agree, or a replay cleans ticks
    differently from the live feed."""
    from services.feed.config import FeedConfig
    from services.replay.config import FeedSanitizerKeys
    keys = set(FeedSanitizerKeys.model_fields)
    assert keys == {"cross_tolerance_ticks", "jump_ticks", "jump_confirm"}
    assert FeedSanitizerKeys().model_dump() == FeedConfig().model_dump(include=keys)
    got = FeedSanitizerKeys.model_validate({"jump_ticks": 50, "stale_after_s": 3, "record": False})
    assert got.jump_ticks == 50 and FeedSanitizerKeys.model_fields["jump_ticks"].metadata == \
        FeedConfig.model_fields["jump_ticks"].metadata
