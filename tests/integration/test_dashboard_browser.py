"""The dashboard in a real browser, against the whole pipeline under supervisord and the simulator.

Headless Chromium (Debian's `chromium`) loads the page the dashboard serves; the test reads
what the page shows and compares it with the position keeper's own `status` answer, halts
and resumes the engine from the page's buttons (through their confirmation), flattens from
the page, and saves screenshots under logs/screenshots/. Then the session report the keeper
writes at shutdown is opened the same way and its charts are checked.
"""
from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from common.bus import LazyPirateClient
from common.config import load_config
from common.instruments import cents_to_str
from common.messages import OperatorCommand, Query
from tests.harness.browser import Browser, chromium_path
from tests.harness.config import write_config
from tests.harness.pipeline import PIPELINE, Pipeline
from tests.harness.procs import ROOT, wait_for
from tests.harness.sim import SimProcess, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow,
              pytest.mark.skipif(chromium_path() is None, reason="needs Debian's chromium (apt-get install chromium)")]

DAY = "2026-11-23"          # a Monday, a normal CME session; the simulator starts at 15:20 New York
SHOTS = ROOT / "logs" / "screenshots"


@contextmanager
def running(pipe: Pipeline, timeout: float):
    """The pipeline under supervisord, with a start timeout for a loaded machine."""
    pipe.start(timeout)
    try:
        yield pipe
    finally:
        pipe.stop()


def http_ok(url: str) -> bool:
    import urllib.request
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def keeper_status(cfg) -> dict:
    rep = LazyPirateClient("test", cfg.bus.positions_query, timeout_ms=3000, retries=1).request(Query("status")).msg
    assert rep.ok, rep
    return rep.data


def engine_status(cfg) -> dict:
    rep = LazyPirateClient("test", cfg.bus.engine_cmd, timeout_ms=3000, retries=1).request(OperatorCommand("status")).msg
    assert rep.ok, rep
    return rep.data


def page_numbers(b: Browser) -> dict:
    return b.js("""(() => { const t = (id) => document.getElementById(id).textContent;
        const c = (id) => document.getElementById(id).dataset.cents;
        return {side: t('pos-side'), size: t('pos-size'), avg: t('pos-avg'), stop: t('pos-stop'),
                target: t('pos-target'), realized: t('pnl-realized'), realized_cents: c('pnl-realized'),
                unrealized: t('pnl-unrealized'), unrealized_cents: c('pnl-unrealized'),
                trades: t('trades-today')}; })()""")


def expected_from_keeper(st: dict) -> dict:
    p, a = st["position"], st["account"]
    flat = not p.get("direction")
    unreal = 0 if flat else p["unrealized_cents"]
    return {"side": {1: "LONG", -1: "SHORT"}.get(p.get("direction"), "FLAT"),
            "size": "" if flat else str(p["size"]), "avg": "-" if flat else p["avg_price"],
            "realized": cents_to_str(a["realized_day_cents"]), "realized_cents": str(a["realized_day_cents"]),
            "unrealized": cents_to_str(unreal), "unrealized_cents": str(unreal), "trades": str(a["trades_today"])}


def shown_equals_keeper(b: Browser, cfg) -> tuple[bool, str]:
    shown = page_numbers(b)
    want = expected_from_keeper(keeper_status(cfg))
    diff = {k: (shown.get(k), v) for k, v in want.items() if shown.get(k) != v}
    return not diff, json.dumps(diff)


def confirm(b: Browser, action: str, reason: str) -> None:
    b.click(f"#btn-{action}")
    b.wait_js("document.getElementById('confirm').classList.contains('on')", 5, what="the confirmation")
    b.js(f"document.getElementById('confirm-reason').value = {json.dumps(reason)}")
    b.js("document.getElementById('command-result').dataset.ok = ''")
    b.click("#confirm-yes")
    b.wait_js("document.getElementById('command-result').dataset.ok === '1'", 20,
              what=f"{action} answered ok on the page")


def test_dashboard_in_a_browser_matches_keeper_halts_engine_and_report_has_charts(tmp_path):
    port = free_port()
    with SimProcess(tmp_path / "sim", speed=30, time_mode="start_at", start_at=f"{DAY}T15:20:00", loop=True) as sim:
        cfg_path = write_config(tmp_path, sim, model={"min_confidence": 0.40, "max_prediction_age_s": 5},
                                trading={"clock": "event"}, risk={"max_consecutive_losses": 50},
                                dashboard={"port": port, "push_s": 0.25})
        cfg = load_config(cfg_path)
        url = f"http://127.0.0.1:{port}/"
        with running(Pipeline(tmp_path, cfg_path, services=PIPELINE + ("dashboard",)), 120) as pipe, \
                Browser(tmp_path) as b:
            wait_for(lambda: http_ok(url + "api/state"), 120, interval=0.5, what=f"the dashboard answering at {url}")
            b.goto(url)
            b.wait_js("document.getElementById('conn').textContent === 'live'", 60, what="the event stream")
            # every service heartbeating, shown on the page
            b.wait_js("[...document.querySelectorAll('#services .pill')].length === 5 && "
                      "[...document.querySelectorAll('#services .pill')].every(e => !e.classList.contains('bad'))",
                      120, what=f"five live services on the page\n{pipe.tails()}")
            # a position opens; freeze the tape so marks stop moving, then the page must show what the keeper says
            wait_for(lambda: sim.state()["positions"], 240, interval=0.3, what=f"an open position\n{pipe.tails()}")
            b.wait_js("document.getElementById('pos-side').textContent !== 'FLAT'", 10, what="the position on the page")
            b.screenshot(SHOTS / "dashboard_position.png", full_page=True)
            sim.control("stall", seconds=12)
            time.sleep(1.0)
            ok, diff = False, ""
            deadline = time.monotonic() + 8
            while time.monotonic() < deadline and not ok:
                ok, diff = shown_equals_keeper(b, cfg)
                time.sleep(0.3)
            assert ok, f"page differs from the keeper's status (shown, keeper): {diff}"
            st = keeper_status(cfg)
            if st["position"].get("stop_ticks") is not None:
                assert b.text("#pos-stop") != "-", "an open position's stop is not shown"
            # the tape is frozen: the page says its market data is stale, in plain sight
            b.wait_js("document.getElementById('stale-banner').classList.contains('on') && "
                      "document.getElementById('stale-banner').textContent.includes('MARKET DATA STALE')",
                      15, what="the stale-data banner while the tape is stalled")
            b.screenshot(SHOTS / "dashboard_stale.png", full_page=False)
            wait_for(lambda: not b.js("document.getElementById('stale-banner').textContent.includes('MARKET')"),
                     30, interval=0.3, what="the banner clearing when quotes resume")
            # the chart has bars and the entry on it
            assert b.js("(() => { const c = document.getElementById('price-chart'); return c.width > 100 && "
                        "c.getContext('2d').getImageData(0, 0, c.width, c.height).data.some((x, i) => i % 4 === 3 && x > 0); })()")

            # halt from the page: the engine and the gateway both latch it
            confirm(b, "halt", "browser drill")
            eng = engine_status(cfg)
            assert "manual_halt" in eng["breakers"], eng
            b.wait_js("document.getElementById('halts').textContent.includes('order gateway halted') && "
                      "document.getElementById('halts').textContent.includes('engine: manual halt')", 10,
                      what="both halts on the page")
            b.wait_js("document.getElementById('breakers').textContent.includes('manual_halt')", 10,
                      what="the manual_halt breaker on the page")
            b.screenshot(SHOTS / "dashboard_halted.png", full_page=True)
            confirm(b, "resume", "browser drill over")
            assert "manual_halt" not in engine_status(cfg)["breakers"]

            # flatten from the page: flat at the broker, and the page agrees with the keeper
            confirm(b, "flatten", "browser drill")
            wait_for(lambda: not sim.state()["positions"] and not sim.state()["working"], 30, interval=0.3,
                     what=f"flat after the page's flatten: {sim.state()['positions']}")
            wait_for(lambda: shown_equals_keeper(b, cfg)[0], 15, interval=0.3,
                     what="the page agreeing with the keeper after the flatten")
            # the last entries' per-hop latency is on the page
            b.wait_js("document.querySelectorAll('#latency tr').length >= 2", 20, what="the entries' latency table")
            b.screenshot(SHOTS / "dashboard.png", full_page=True)
            trades = int(keeper_status(cfg)["account"]["trades_today"])
        # the pipeline stopped. The keeper writes the report on its way out (test_positions_keeper checks
        # that); here `scalper report` writes it from the day's files, as an operator would, and it is
        # opened the same way as the dashboard
        import subprocess
        import sys
        r = subprocess.run([sys.executable, "-m", "services.cli", "--config", str(cfg_path), "report", "--day", DAY],
                           cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        report = Path(r.stdout.strip())
        assert report == Path(cfg.logging.dir) / f"report_{DAY}.html" and report.exists(), r.stdout
        assert (Path(cfg.logging.dir) / f"session_{DAY}.jsonl").exists(), "the dashboard recorded no session file"
        with Browser(tmp_path / "report-browser") as rb:
            rb.goto(report.as_uri())
            charts = rb.js("[...document.querySelectorAll('figure[data-chart]')].map(f => [f.dataset.chart, "
                           "!!f.querySelector('svg'), Math.round(f.getBoundingClientRect().height)])")
            names = {c[0] for c in charts}
            for want in ("equity", "price", "pnl_hour", "pnl_reason", "confidence", "latency"):
                assert want in names, f"no {want} chart in the report: {charts}"
            assert all(has_svg and height > 100 for _, has_svg, height in charts), charts
            rows = rb.js("document.querySelectorAll('#trades tbody tr').length")
            csv_rows = len((Path(cfg.logging.dir) / f"trades_{DAY}.csv").read_text().splitlines()) - 1
            assert rows == csv_rows >= trades, (rows, csv_rows, trades)   # the gateway's shutdown flatten may add one
            # the trades table fits one screen's width
            assert rb.js("document.documentElement.scrollWidth <= window.innerWidth"), "the report scrolls sideways"
            assert rb.js("!document.querySelector('script[src], link[href^=http], img[src^=http]')"), \
                "the report loads something from outside its file"
            rb.screenshot(SHOTS / "report.png", full_page=True)
