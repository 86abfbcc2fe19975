from common.hops import HopStats, pct, segments

US = 1000


def chain(t0: int = 1_000_000_000, **gaps_us: int) -> dict[str, int]:
    stages = ["tick_recv", "feed_pub", "bar_closed", "features_done", "model_scored", "engine",
              "cmd_recv", "order_sent", "order_ack"]
    hops, t = {}, t0
    for s in stages:
        t += gaps_us.get(s, 0) * US
        hops[s] = t
    return hops


def test_segments_follow_the_pipeline_and_total_is_first_to_last():
    h = chain(feed_pub=50, bar_closed=400, features_done=20, model_scored=30, engine=300, cmd_recv=100,
              order_sent=200, order_ack=2000)
    seg = segments(h)
    assert seg == {"feed": 50 * US, "bar_wait": 400 * US, "features": 20 * US, "inference": 30 * US,
                   "signal": 300 * US, "command": 100 * US, "order_prep": 200 * US, "broker_ack": 2000 * US,
                   "total": 3100 * US}
    assert sum(v for k, v in seg.items() if k != "total") == seg["total"]


def test_missing_stages_are_skipped_not_guessed():
    h = chain(feed_pub=50, engine=10, order_ack=7)
    del h["bar_closed"], h["features_done"], h["model_scored"]
    seg = segments(h)
    assert "features" not in seg and "inference" not in seg
    assert seg["signal"] == 10 * US              # feed_pub -> engine, the stages between absent
    assert segments({"engine": 5}) == {} and segments({}) == {}


def test_hopstats_median_p99_and_flat_keys():
    st = HopStats(window=100)
    for i in range(1, 101):
        st.add(chain(order_ack=i))
    s = st.summary()["broker_ack"]
    assert s["n"] == 100 and s["median_us"] == 50.5 and s["p99_us"] == 99.0
    flat = st.flat()
    assert flat["hop_broker_ack_us_p50"] == 50.5 and "hop_total_us_p99" in flat
    st.add(chain(order_ack=1000))
    assert st.summary()["broker_ack"]["n"] == 100          # a rolling window: memory stays flat


def test_pct_nearest_rank():
    assert pct([5.0], 99) == 5.0
    assert pct(list(range(1, 11)), 50) == 5 and pct(list(range(1, 11)), 100) == 10


def test_recent_keeps_the_last_entries_whole_in_microseconds():
    st = HopStats()
    for i in range(12):
        st.add(chain(t0=1_000_000_000 + i, feed_pub=50, order_ack=2000 + i))
    recent = st.recent_list()
    assert len(recent) == 10                                  # the last ten, oldest first
    assert recent[-1]["broker_ack"] == 2011.0 and recent[0]["broker_ack"] == 2002.0
    assert recent[-1]["at_ns"] == 1_000_000_011 and recent[-1]["feed"] == 50.0
    assert recent[-1]["total"] == 2061.0
