"""`scalper`: the operator's entry point.

    scalper run                 the whole pipeline under supervisord (foreground)
    scalper status              every service's heartbeat, feed, position, P&L, breakers, orders
    scalper halt [REASON]       no new entries (engine and order gateway both latch it)
    scalper resume              lift a manual halt
    scalper flatten             cancel every order and close every position now
    scalper report [--day D]    write and print the session report
    scalper check               config, model, broker connectivity and auth; places nothing
    scalper recover SERVICE     move an unreadable journal/state file aside (orders, positions)
    scalper model ...           list | train | evaluate | promote (python -m services.modelctl)
    scalper backtest REC        the engine's rules over a recording -> the session report

halt and flatten go to the order gateway directly as well as to the engine, so they
work when the engine is down. A job another package owns (the report, the model check, the
model lifecycle) runs as that package's module, so this program imports no service's insides.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common.config import ROOT, Config, ConfigError, load_config

SERVICES = ("feed", "inference", "engine", "orders", "positions")


def _cfg(args) -> Config:
    try:
        return load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(2)


# --------------------------------------------------------------------------
# talking to the services
# --------------------------------------------------------------------------

def _request(endpoint: str, msg: Any, timeout_ms: int = 1500):
    from common.operator_commands import request
    return request(endpoint, msg, timeout_ms, name="cli")


def _run_module(module: str, cfg: Config, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess:
    """`python -m module --config <this config> args...`, output captured."""
    return subprocess.run([sys.executable, "-m", module, "--config", cfg.source, *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout_s)


def _heartbeats(cfg: Config, seconds: float = 1.6) -> dict[str, Any]:
    """Listen to every publisher for a moment; newest heartbeat per service."""
    import zmq
    from common.messages import DecodeError, Heartbeat, decode
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SUBSCRIBE, b"Heartbeat")
    for name in SERVICES:
        sock.connect(getattr(cfg.bus, f"{name}_pub"))
    sock.connect(cfg.bus.supervision_pub)          # the supervisord listener: crash counts
    got: dict[str, tuple[float, Heartbeat]] = {}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if sock.poll(50):
            try:
                env = decode(sock.recv_multipart()[-1])
            except DecodeError:
                continue
            if isinstance(env.msg, Heartbeat):
                got[env.msg.service] = (time.monotonic(), env.msg)
    sock.close()
    return {k: v[1] for k, v in got.items()}


def cmd_status(args) -> int:
    from common.instruments import cents_to_str
    from common.messages import OperatorCommand, OrderCommand, Query
    cfg = _cfg(args)
    beats = _heartbeats(cfg)
    out: dict[str, Any] = {"services": {}}
    print(f"{'service':<11} {'state':<10} {'pid':>7} {'uptime':>9}  market time / notes")
    from common.clock import fmt_ny
    for name in SERVICES:
        hb = beats.get(name)
        if hb is None:
            print(f"{name:<11} {'SILENT':<10} {'-':>7} {'-':>9}  no heartbeat in 1.6 s")
            out["services"][name] = None
            continue
        mt = fmt_ny(hb.exch_ns) if hb.exch_ns else "-"
        extra = hb.stats.get("feed_state") or hb.stats.get("state") or ""
        print(f"{name:<11} {hb.state:<10} {hb.pid:>7} {hb.uptime_s:>8.0f}s  {mt} {extra}")
        out["services"][name] = {"state": hb.state, "pid": hb.pid, "uptime_s": hb.uptime_s, "stats": hb.stats}
    _print_crashes(beats.get("supervision"), out)
    pos = _request(cfg.bus.positions_query, Query("status"))
    if pos is not None and pos.ok:
        out["positions"] = pos.data
        p = pos.data.get("position") or {}
        a = pos.data.get("account") or {}
        side = {1: "LONG", -1: "SHORT"}.get(p.get("direction", 0), "FLAT")
        print(f"\nposition   {side} {p.get('size', 0)} @ {p.get('avg_price', '-')}  "
              f"unrealized {cents_to_str(p.get('unrealized_cents', 0))}")
        if a:
            print(f"account    balance {cents_to_str(a.get('balance_cents', 0)).lstrip('+')}  day realized "
                  f"{cents_to_str(a.get('realized_day_cents', 0))}  trades {a.get('trades_today', 0)}  "
                  f"consecutive losses {a.get('consecutive_losses', 0)}")
    else:
        print("\nposition   keeper not answering")
    eng = _request(cfg.bus.engine_cmd, OperatorCommand("status"))
    if eng is not None and eng.ok:
        out["engine"] = eng.data
        breakers = eng.data.get("breakers") or eng.data.get("active_breakers") or []
        print(f"breakers   {', '.join(map(str, breakers)) if breakers else 'none active'}")
    else:
        print("breakers   engine not answering")
    gw = _request(cfg.bus.orders_cmd, OrderCommand(key=f"status-{time.time_ns()}", action="status"))
    if gw is not None and getattr(gw, "ok", False):
        out["orders"] = gw.detail
        orders = gw.detail.get("working_orders") or []
        print(f"orders     {len(orders)} working; gateway {'HALTED' if gw.detail.get('halted') else 'active'}")
        for o in orders:
            print(f"           {o}")
    else:
        print("orders     gateway not answering")
    if args.json:
        print(json.dumps(out, default=str, indent=2))
    return 0 if all(out["services"].values()) else 1


def _print_crashes(hb, out: dict) -> None:
    """Exits per program in the listener's window, and what it stopped for a crash loop."""
    if hb is None:
        print("crashes    supervision listener silent: crash loops are not being watched")
        return
    out["supervision"] = hb.stats
    exits = ", ".join(f"{n} {c} exits" for n, c in (hb.stats.get("exits") or {}).items()) or "no exits"
    stopped = hb.stats.get("stopped") or []
    print(f"crashes    {exits} in the last {hb.stats.get('window_min', '?')} min (stop at "
          f"{hb.stats.get('max_exits', '?')})" + (f"; {', '.join(stopped)} STOPPED for a crash loop: fix the cause, "
                                                  "then supervisorctl start" if stopped else ""))


def _operator(args, action: str) -> int:
    """halt / resume / flatten: to the engine and to the gateway (common/operator_commands.py,
    which the dashboard's buttons use too)."""
    from common.operator_commands import send
    cfg = _cfg(args)
    reason = " ".join(getattr(args, "reason", []) or []) or f"operator {action}"
    answers = send(cfg, action, reason, timeout_ms=5000)
    for a in answers:
        print(a.line())
    return 0 if any(a.ok or a.pending_key for a in answers) else 1


def cmd_report(args) -> int:
    cfg = _cfg(args)
    day = ["--day", args.day] if args.day else []
    shadow = _run_module("services.modelctl.shadow", cfg, *day)   # shadow mode's summary, when there was one
    sys.stderr.write(shadow.stderr)
    r = _run_module("services.positions.report", cfg, *day)
    sys.stdout.write(r.stdout)
    sys.stderr.write(r.stderr)
    return r.returncode


def cmd_check(args) -> int:
    """Config, model and broker checks. Places no order."""
    cfg = _cfg(args)
    failures = 0
    from loguru import logger
    logger.remove()             # the [ok]/[FAIL] lines are the output; client chatter is not
    logger.add(sys.stderr, level="ERROR", format="{message}")

    def line(ok: bool, what: str, detail: str = "") -> None:
        nonlocal failures
        failures += 0 if ok else 1
        print(f"[{'ok' if ok else 'FAIL'}] {what}{': ' + detail if detail else ''}")

    line(True, "config", f"{cfg.source} (mode {cfg.api.mode}, contract {cfg.trading.contract})")
    for w in cfg.warnings():
        print(f"[warn] {w}")
    cfg = _check_contract(cfg, line)
    r = _run_module("services.inference.check", cfg)        # prints its own [ok]/[FAIL]/[warn] lines
    print(r.stdout.strip() or f"[FAIL] model: {(r.stderr.strip() or f'exit {r.returncode}').splitlines()[-1]}")
    failures += 0 if r.returncode == 0 else 1
    from common.topstepx.rest import TopstepXClient, TopstepXError
    client = TopstepXClient.from_config(cfg.api)
    try:
        client.login()
        line(True, "authentication", f"{cfg.api.base_url} as {cfg.api.username}")
        accounts = client.accounts()
        acct = next((a for a in accounts if cfg.api.account_id in (None, a.get("id"))), None)
        line(acct is not None, "account", f"{acct.get('name')} id {acct.get('id')} balance {acct.get('balance')} "
             f"canTrade {acct.get('canTrade')}" if acct else f"{cfg.api.account_id} not among {len(accounts)} accounts")
        contract = client.contract(cfg.trading.contract)
        line(contract is not None, "contract", f"{cfg.trading.contract} tickSize {contract.get('tickSize')} "
             f"tickValue {contract.get('tickValue')}" if contract else f"{cfg.trading.contract} not found")
        if acct is not None:
            n_pos = len(client.open_positions(acct["id"]))
            n_ord = len(client.open_orders(acct["id"]))
            line(True, "broker state", f"{n_pos} open positions, {n_ord} open orders")
    except (TopstepXError, OSError) as exc:
        line(False, "broker", str(exc))
    finally:
        client.close()
    ok, detail = _check_market_hub(cfg)
    line(ok, "market hub", detail)
    return 1 if failures else 0


def _check_contract(cfg: Config, line) -> Config:
    """trading.contract as the services will trade it: a symbol resolved to the front month,
    an expired month refused, a near expiry warned (common/contracts.py)."""
    from common.clock import LiveClock, make_clock, to_ny
    from common.contracts import ContractError, resolve_with_client
    from common.instruments import INSTRUMENTS
    from common.session import SessionCalendar
    from common.topstepx.rest import TopstepXClient
    if cfg.trading.contract not in INSTRUMENTS and cfg.api.mode != "live":
        return cfg
    clock = make_clock(cfg.trading.clock)
    today = to_ny(clock.now_ns()).date() if isinstance(clock, LiveClock) else None
    client = TopstepXClient.from_config(cfg.api, share=0.05)
    try:
        cid, warning = resolve_with_client(client, cfg.trading.contract, today, cfg.trading.expiry_warning_days,
                                           SessionCalendar.from_config(cfg.trading).is_trading_day, give_up_s=5)
    except ContractError as exc:
        line(False, "contract", str(exc))
        return cfg
    finally:
        client.close()
    line(True, "contract resolved", f"{cfg.trading.contract} -> {cid}")
    if warning:
        print(f"[warn] {warning}")
    return cfg.model_copy(update={"trading": cfg.trading.model_copy(update={"contract": cid})})


def _check_market_hub(cfg: Config, timeout_s: float = 10.0) -> tuple[bool, str]:
    """Connect to the market hub with a fresh token, subscribe the contract's quotes and wait
    for one. Places nothing."""
    import threading
    from common.topstepx.hub import HubClient
    from common.topstepx.rest import TopstepXClient, TopstepXError
    client = TopstepXClient.from_config(cfg.api)
    got = threading.Event()
    contract = cfg.trading.contract
    hub = HubClient(cfg.api.market_hub_url, client.token,
                    subscriptions=lambda h: h.send("SubscribeContractQuotes", [contract]),
                    handlers={"GatewayQuote": lambda args: got.set()}, name="market-check",
                    connect_timeout_s=timeout_s)
    started = time.monotonic()
    try:
        hub.start()
        if got.wait(timeout_s):
            return True, f"{cfg.api.market_hub_url}: first {contract} quote after {time.monotonic() - started:.2f} s"
        if hub.connected:
            return False, f"{cfg.api.market_hub_url}: connected but no {contract} quote in {timeout_s:.0f} s " \
                          "(market closed?)"
        return False, f"{cfg.api.market_hub_url}: not connected in {timeout_s:.0f} s ({hub.last_reason or 'no answer'})"
    except TopstepXError as exc:
        return False, str(exc)
    finally:
        hub.stop()
        client.close()


def cmd_run(args) -> int:
    conf = ROOT / "supervisord.conf"
    (ROOT / "run").mkdir(exist_ok=True)
    (ROOT / "logs" / "supervisor").mkdir(parents=True, exist_ok=True)
    cfg = _cfg(args)
    for w in cfg.warnings():
        print(f"warning: {w}", file=sys.stderr)
    if cfg.api.mode == "live":              # the inference worker refuses too; say it before anything starts
        r = _run_module("services.inference.check", cfg)
        if r.returncode != 0:
            fails = [ln for ln in r.stdout.splitlines() if ln.startswith("[FAIL]")] or [r.stderr.strip()]
            print(f"scalper run: refused: {fails[0]}", file=sys.stderr)
            return 2
    if cfg.api.mode == "sim":
        _archive_sim_state(cfg)
    exe = Path(sys.executable).with_name("supervisord")
    os.execv(str(exe), [str(exe), "-n", "-c", str(conf)])


def _archive_sim_state(cfg: Config) -> None:
    """The simulator keeps no account between runs: every run is a fresh broker. The journals of
    the last run (gateway intents, keeper day statistics) describe an account that no longer
    exists, so a sim run starts without them; they are kept under logs/state-runs/<time>/.
    In live mode nothing is moved: the broker remembers, and so must we."""
    state = cfg.path(cfg.logging.dir) / "state"
    if state.is_dir() and any(state.iterdir()):
        dest = state.parent / "state-runs" / time.strftime("%Y%m%d-%H%M%S")
        dest.parent.mkdir(parents=True, exist_ok=True)
        state.rename(dest)
        print(f"sim mode: the last run's journals moved to {dest}", file=sys.stderr)


def cmd_recover(args) -> int:
    """Move an unreadable journal or state file aside (nothing is deleted). On its next start the
    service finds no state and rebuilds it from the broker, which is the truth. Each service owns
    its files and how to read them (services/<service>/recover.py)."""
    cfg = _cfg(args)
    r = _run_module(f"services.{args.service}.recover", cfg, *(["--force"] if args.force else []))
    sys.stdout.write(r.stdout)
    sys.stderr.write(r.stderr)
    return r.returncode


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scalper", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=None, help="config file (default: $SCALPER_CONFIG or config/live_trading.yaml)")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("run", help="run the pipeline under supervisord in the foreground").set_defaults(fn=cmd_run)
    s = sub.add_parser("status", help="health of every service, position, P&L, breakers, orders")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_status)
    h = sub.add_parser("halt", help="stop new entries (engine and gateway)")
    h.add_argument("reason", nargs="*")
    h.set_defaults(fn=lambda a: _operator(a, "halt"))
    sub.add_parser("resume", help="lift a manual halt").set_defaults(fn=lambda a: _operator(a, "resume"))
    f = sub.add_parser("flatten", help="cancel all orders and close all positions now")
    f.add_argument("reason", nargs="*")
    f.set_defaults(fn=lambda a: _operator(a, "flatten"))
    r = sub.add_parser("report", help="write and print the session report")
    r.add_argument("--day", default=None, help="YYYY-MM-DD (default today)")
    r.set_defaults(fn=cmd_report)
    sub.add_parser("check", help="validate config and model, test broker connectivity; places nothing").set_defaults(
        fn=cmd_check)
    rc = sub.add_parser("recover", help="move an unreadable journal or state file aside; the service then "
                                        "rebuilds from the broker")
    rc.add_argument("service", choices=("orders", "positions"))
    rc.add_argument("--force", action="store_true", help="move the files aside even if they read fine")
    rc.set_defaults(fn=cmd_recover)
    # model lifecycle and backtest: python -m services.modelctl owns the arguments
    sub.add_parser("model", help="model list | train | evaluate | promote", add_help=False, prefix_chars="\0")
    sub.add_parser("backtest", help="the engine's rules over a recording -> the session report", add_help=False,
                   prefix_chars="\0")
    argv = list(sys.argv[1:] if argv is None else argv)
    lifecycle = next((i for i, a in enumerate(argv) if a in ("model", "backtest")), None)
    if lifecycle is not None and all(a.startswith("-") or argv[i - 1] == "--config" for i, a in
                                     enumerate(argv[:lifecycle])):
        return subprocess.run([sys.executable, "-m", "services.modelctl", *argv[lifecycle:], *argv[:lifecycle]],
                              cwd=ROOT).returncode
    args = p.parse_args(argv)
    return int(args.fn(args) or 0)
