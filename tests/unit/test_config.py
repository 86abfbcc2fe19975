"""Configuration: every bad value stops the start with one line naming the key, the value and what is expected."""
from __future__ import annotations

import os
from datetime import time
from decimal import Decimal
from pathlib import Path

import pytest

from common.config import ROOT, Config, ConfigError, expand_env, load_config

LIVE_API = """\
api:
  mode: live
  base_url: https://api.topstepx.com
  username: ${TOPSTEPX_USERNAME}
  api_key: ${TOPSTEPX_API_KEY}
  account_id: ${TOPSTEPX_ACCOUNT_ID}
trading:
  flatten_time: "16:05"     # live mode refuses a flatten after broker_flat_by (16:10)
"""
SECRET = "sk-live-7f3c9a1b2d4e6f80"
LIVE_ENV = {"TOPSTEPX_USERNAME": "trader", "TOPSTEPX_API_KEY": SECRET, "TOPSTEPX_ACCOUNT_ID": "4242"}


def write(tmp_path: Path, text: str, name: str = "cfg.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def error_of(tmp_path: Path, text: str, env: dict | None = None) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env=env or {})
    msg = str(info.value)
    assert "\n" not in msg, f"not one line: {msg!r}"
    assert msg.startswith(f"config error ({path}"), msg
    return msg


# -- good files -------------------------------------------------------------

def test_shipped_config_loads_with_an_empty_environment():
    cfg = load_config(ROOT / "config" / "live_trading.yaml", env={})
    assert cfg.api.mode == "sim"
    assert cfg.trading.contract == "MES"            # a symbol: the front month, resolved at start
    assert cfg.trading.clock == "event"             # SCALPER_CLOCK unset: follows api.mode sim
    assert (cfg.trading.session_start, cfg.trading.session_end, cfg.trading.flatten_time) == (
        time(9, 30), time(16, 30), time(16, 25))
    assert cfg.risk.max_daily_loss == Decimal(50) and cfg.risk.max_daily_loss_cents == 5000
    assert cfg.api.account_id is None
    assert cfg.api.api_key.get_secret_value() == "sim-key"     # ${TOPSTEPX_API_KEY:-sim-key}


def test_empty_file_gives_the_defaults(tmp_path):
    cfg = load_config(write(tmp_path, ""), env={})
    assert cfg.trading == Config().trading and cfg.risk == Config().risk
    assert cfg.source == str(tmp_path / "cfg.yaml")


def test_live_mode_with_every_credential_loads(tmp_path):
    cfg = load_config(write(tmp_path, LIVE_API), env=LIVE_ENV)
    assert cfg.api.mode == "live" and cfg.api.account_id == 4242 and cfg.api.username == "trader"
    assert cfg.api.api_key.get_secret_value() == SECRET
    assert SECRET not in repr(cfg) and SECRET not in str(cfg.api)


def test_times_accept_yaml_sexagesimal_and_strings(tmp_path):
    # unquoted 09:45 is the YAML 1.1 integer 585
    cfg = load_config(write(tmp_path, "trading:\n  session_start: 09:45\n  flatten_time: '16:20'\n"), env={})
    assert cfg.trading.session_start == time(9, 45) and cfg.trading.flatten_time == time(16, 20)


# -- ${VAR} expansion -----------------------------------------------------------

def test_var_and_default_expansion(tmp_path):
    text = """\
api:
  username: ${WHO}
  base_url: http://127.0.0.1:${PORT:-18080}
  account_id: ${ACCT:-77}
trading:
  contract: CON.F.US.${ROOT:-MES}.${MONTH}26
logging:
  dir: ${LOGDIR:-logs}/x
"""
    cfg = load_config(write(tmp_path, text), env={"WHO": "alice", "MONTH": "M", "LOGDIR": "/var/log/s"})
    assert cfg.api.username == "alice"
    assert cfg.api.base_url == "http://127.0.0.1:18080"
    assert cfg.api.account_id == 77
    assert cfg.trading.contract == "CON.F.US.MES.M26"
    assert cfg.logging.dir == "/var/log/s/x"


def test_expand_env_rules():
    env = {"A": "1", "EMPTY": ""}
    assert expand_env("${A}", env) == "1"
    assert expand_env("${MISSING}", env) is None                 # whole value unset -> null
    assert expand_env("${EMPTY}", env) is None                   # set but empty counts as unset
    assert expand_env("${MISSING:-d}", env) == "d"
    assert expand_env("${EMPTY:-d}", env) == "d"
    assert expand_env("${MISSING:-}", env) == ""
    assert expand_env("x${MISSING}y${A}", env) == "xy1"          # inside a longer string -> ''
    assert expand_env(" ${A} ", env) == "1"
    assert expand_env({"k": ["${A}", 5, None, {"n": "${B:-b}"}]}, env) == {"k": ["1", 5, None, {"n": "b"}]}
    assert expand_env("$A and {A}", env) == "$A and {A}"         # only the ${...} form expands


def test_expansion_reads_os_environ_when_no_env_given(tmp_path, monkeypatch):
    monkeypatch.setenv("SCALPER_TEST_USER", "bob")
    cfg = load_config(write(tmp_path, "api:\n  username: ${SCALPER_TEST_USER}\n"))
    assert cfg.api.username == "bob"


# -- each bad value: one line with the key, the value and what is expected -----

def test_live_mode_without_account_id(tmp_path):
    env = {k: v for k, v in LIVE_ENV.items() if k != "TOPSTEPX_ACCOUNT_ID"}
    msg = error_of(tmp_path, LIVE_API, env)
    assert "api.account_id" in msg and "TOPSTEPX_ACCOUNT_ID" in msg and "live mode" in msg
    assert SECRET not in msg


@pytest.mark.parametrize("missing, key", [("TOPSTEPX_API_KEY", "api.api_key"), ("TOPSTEPX_USERNAME", "api.username")])
def test_live_mode_without_other_credentials(tmp_path, missing, key):
    env = {k: v for k, v in LIVE_ENV.items() if k != missing}
    msg = error_of(tmp_path, LIVE_API, env)
    assert key in msg and missing in msg
    assert SECRET not in msg


def test_live_mode_pointed_at_the_simulator(tmp_path):
    msg = error_of(tmp_path, LIVE_API.replace("https://api.topstepx.com", "http://127.0.0.1:18080"), LIVE_ENV)
    assert "api.base_url = http://127.0.0.1:18080" in msg and "https://api.topstepx.com" in msg
    assert SECRET not in msg


def test_sim_mode_needs_no_account_id(tmp_path):
    cfg = load_config(write(tmp_path, LIVE_API.replace("mode: live", "mode: sim")), env={})
    assert cfg.api.account_id is None


@pytest.mark.parametrize("value", ["-5", "0"])
def test_non_positive_daily_loss(tmp_path, value):
    msg = error_of(tmp_path, f"risk:\n  max_daily_loss: {value}\n")
    assert f"risk.max_daily_loss = {value}" in msg and "greater than 0" in msg


def test_limit_entries_are_refused_not_ignored(tmp_path):
    msg = error_of(tmp_path, "execution:\n  order_type: limit\n")
    assert "execution.order_type = 'limit'" in msg and "market orders only" in msg
    assert load_config(write(tmp_path, "execution:\n  order_type: market\n"), env={}).execution.order_type == "market"


def test_negative_min_balance(tmp_path):
    msg = error_of(tmp_path, "risk:\n  min_balance: -1\n")
    assert "risk.min_balance = -1" in msg and "greater than or equal to 0" in msg


@pytest.mark.parametrize("flatten", ["16:45", "09:00", "09:30"])
def test_flatten_time_outside_the_session(tmp_path, flatten):
    msg = error_of(tmp_path, f"trading:\n  flatten_time: '{flatten}'\n")
    assert f"trading.flatten_time = {flatten}" in msg
    assert "outside the session 09:30-16:30" in msg


def test_flatten_at_session_end_is_allowed(tmp_path):
    assert load_config(write(tmp_path, "trading:\n  flatten_time: '16:30'\n"), env={}).trading.flatten_time == time(16, 30)


def test_session_end_before_start(tmp_path):
    msg = error_of(tmp_path, "trading:\n  session_start: '16:00'\n  session_end: '10:00'\n  flatten_time: '15:00'\n")
    assert "trading.session_end = 10:00" in msg and "after" in msg and "trading.session_start = 16:00" in msg


def test_time_not_hh_mm(tmp_path):
    msg = error_of(tmp_path, "trading:\n  flatten_time: quarter past four\n")
    assert "trading.flatten_time = 'quarter past four'" in msg and '"HH:MM"' in msg


@pytest.mark.parametrize("contract, says", [
    ("CON.F.US.XYZ.H26", "unknown root 'XYZ'"),
    ("MESH6", "is not of the form CON.F.US.<ROOT>"),
    ("CON.F.US.MES.A26", "is not of the form"),          # A is no month code
])
def test_unknown_contract(tmp_path, contract, says):
    msg = error_of(tmp_path, f"trading:\n  contract: {contract}\n")
    assert f"trading.contract = '{contract}'" in msg and says in msg


def test_min_stop_above_max_stop(tmp_path):
    msg = error_of(tmp_path, "risk:\n  min_stop_ticks: 50\n  max_stop_ticks: 40\n")
    assert "risk.min_stop_ticks = 50" in msg and "risk.max_stop_ticks = 40" in msg and "above" in msg


@pytest.mark.parametrize("endpoint", ["tcp://0.0.0.0:5550", "tcp://10.1.2.3:5550", "tcp://*:5550"])
def test_non_loopback_bus_endpoint(tmp_path, endpoint):
    msg = error_of(tmp_path, f"bus:\n  feed_pub: '{endpoint}'\n")
    assert f"bus.feed_pub = {endpoint}" in msg and "loopback" in msg and "CURVE" in msg


@pytest.mark.parametrize("endpoint", ["ipc:///tmp/x/feed.sock", "tcp://127.0.0.1:6000", "tcp://localhost:6000"])
def test_loopback_and_ipc_endpoints_are_fine(tmp_path, endpoint):
    assert load_config(write(tmp_path, f"bus:\n  engine_cmd: '{endpoint}'\n"), env={}).bus.engine_cmd == endpoint


def test_wrong_type_and_unknown_key(tmp_path):
    msg = error_of(tmp_path, "risk:\n  max_contracts: two\n")
    assert "risk.max_contracts = 'two'" in msg and "integer" in msg
    msg = error_of(tmp_path, "risk:\n  max_dayly_loss: 5\n")
    assert "risk.max_dayly_loss" in msg and "not permitted" in msg


def test_several_errors_count_the_rest(tmp_path):
    msg = error_of(tmp_path, "risk:\n  max_daily_loss: -1\n  max_contracts: 0\n")
    assert msg.endswith("(+1 more)")


def test_bad_yaml_names_the_line(tmp_path):
    msg = error_of(tmp_path, "risk:\n  max_daily_loss: 50\n  list: [1, 2\n")
    assert "not valid YAML" in msg and " line " in msg


def test_top_level_not_a_mapping(tmp_path):
    assert "top level must be a mapping" in error_of(tmp_path, "- a\n- b\n")


def test_unreadable_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(missing, env={})
    assert str(info.value) == f"config error: cannot read {missing}: No such file or directory"
    with pytest.raises(ConfigError, match="cannot read .*Is a directory"):
        load_config(tmp_path, env={})
    if os.geteuid() != 0:      # root reads anything
        p = write(tmp_path, "risk: {}\n", "locked.yaml")
        p.chmod(0)
        with pytest.raises(ConfigError, match="Permission denied"):
            load_config(p, env={})


# -- secrets ---------------------------------------------------------------

def test_api_key_errors_print_secret_placeholder(tmp_path):
    msg = error_of(tmp_path, "api:\n  api_key: [" + SECRET + "]\n")
    assert "api.api_key = <secret>" in msg and SECRET not in msg


def test_no_error_line_ever_contains_the_api_key(tmp_path):
    bad_sections = [
        "  account_id: not-a-number\n",
        "  request_timeout_s: -1\n",
        "  mode: paper\n",
        "  surprise: 1\n",
    ]
    for extra in bad_sections:
        msg = error_of(tmp_path, f"api:\n  api_key: {SECRET}\n{extra}")
        assert SECRET not in msg, msg
    # a section-level rule failing must not dump the raw section (api_key included)
    msg = error_of(tmp_path, LIVE_API.replace("https://api.topstepx.com", "http://localhost:18080"), LIVE_ENV)
    assert SECRET not in msg and "{" not in msg


# -- warnings and sections -------------------------------------------------

def test_warns_when_flatten_is_after_broker_flat_by(tmp_path):
    cfg = load_config(write(tmp_path, "trading:\n  flatten_time: '16:25'\n  broker_flat_by: '16:10'\n"), env={})
    (w,) = cfg.warnings()
    assert "trading.flatten_time 16:25" in w and "16:10" in w
    cfg = load_config(write(tmp_path, "trading:\n  flatten_time: '16:05'\n  broker_flat_by: '16:10'\n"), env={})
    assert cfg.warnings() == []


def test_service_section_errors_name_the_section(tmp_path):
    from pydantic import BaseModel, ConfigDict, Field

    class Feed(BaseModel):
        model_config = ConfigDict(extra="forbid")
        stale_after_s: float = Field(10, gt=0)

    cfg = load_config(write(tmp_path, "feed:\n  stale_after_s: -3\n"), env={})
    with pytest.raises(ConfigError) as info:
        cfg.section("feed", Feed)
    assert "feed.stale_after_s = -3" in str(info.value) and "greater than 0" in str(info.value)
    assert cfg.section("absent", Feed).stale_after_s == 10


def test_overrides_apply_before_validation(tmp_path):
    p = write(tmp_path, "risk:\n  max_contracts: 2\n")
    assert load_config(p, env={}, overrides={"risk.max_contracts": 1}).risk.max_contracts == 1
    with pytest.raises(ConfigError, match="risk.max_contracts = 0"):
        load_config(p, env={}, overrides={"risk.max_contracts": 0})


# -- live mode: wall clock, flat by the broker's time ---------------------------------------

def test_live_mode_forces_the_wall_clock(tmp_path):
    cfg = load_config(write(tmp_path, LIVE_API), env=LIVE_ENV)
    assert cfg.trading.clock == "live"              # unset: follows api.mode
    shipped = load_config(ROOT / "config" / "live_trading.yaml", env={**LIVE_ENV, "SCALPER_MODE": "live",
                                                                      "TOPSTEPX_BASE_URL": "https://api.topstepx.com"},
                          overrides={"trading.flatten_time": "16:05"})
    assert shipped.trading.clock == "live"          # the shipped file: SCALPER_CLOCK need not be exported
    msg = error_of(tmp_path, LIVE_API + "  clock: event\n", LIVE_ENV)
    assert "trading.clock = event" in msg and "api.mode live needs the wall clock" in msg
    assert load_config(write(tmp_path, LIVE_API.replace("mode: live", "mode: sim")), env={}).trading.clock == "event"


def test_live_mode_refuses_a_flatten_after_broker_flat_by_unless_overridden(tmp_path):
    late = LIVE_API.replace('flatten_time: "16:05"', 'flatten_time: "16:25"')
    msg = error_of(tmp_path, late, LIVE_ENV)
    assert "trading.flatten_time = 16:25" in msg and "trading.broker_flat_by = 16:10" in msg
    assert "trading.allow_flatten_after_broker_flat_by: true" in msg          # the error names the key
    cfg = load_config(write(tmp_path, late + "  allow_flatten_after_broker_flat_by: true\n"), env=LIVE_ENV)
    assert cfg.trading.flatten_time == time(16, 25) and cfg.warnings()      # accepted, still warned
    # sim mode: a warning only
    assert load_config(write(tmp_path, late.replace("mode: live", "mode: sim")), env={}).warnings()


def test_contract_may_be_a_symbol_or_an_id(tmp_path):
    assert load_config(write(tmp_path, "trading:\n  contract: MNQ\n"), env={}).trading.contract == "MNQ"
    msg = error_of(tmp_path, "trading:\n  contract: XYZ\n")
    assert "trading.contract = 'XYZ'" in msg
