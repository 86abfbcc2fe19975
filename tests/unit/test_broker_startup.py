"""Start-up against a broker that is not up yet (common/topstepx/startup.py): waited for with one
line per attempt; a refusal (bad credentials, wrong URL) ends it at once."""
from __future__ import annotations

import pytest
from loguru import logger

from common.contracts import ContractError, resolve_with_client
from common.topstepx.rest import AuthError, OutcomeUnknown, RateLimited, TopstepXError
from common.topstepx.startup import until_reachable


@pytest.fixture
def lines():
    got: list[str] = []
    sink = logger.add(lambda m: got.append(m.record["message"]), level="WARNING")
    yield got
    logger.remove(sink)


def test_an_unreachable_broker_is_waited_for_with_one_line_per_attempt(lines):
    fails = [OutcomeUnknown("/api/Auth/loginKey: connection failed (ConnectionError)"),
             OutcomeUnknown("/api/Auth/loginKey: HTTP 503"), RateLimited("/api/Auth/loginKey: HTTP 429 rate limited")]
    pauses: list[float] = []

    def login():
        if fails:
            raise fails.pop(0)
        return "token"
    assert until_reachable("login", login, first_s=0.5, max_s=1.5, sleep=pauses.append) == "token"
    assert pauses == [0.5, 1.0, 1.5]
    assert len(lines) == 3 and all(ln.startswith("API: login: broker not reachable (") for ln in lines)
    assert "connection failed" in lines[0] and "attempt 1" in lines[0] and "next try in 0.5 s" in lines[0]


@pytest.mark.parametrize("refusal", [AuthError("login as 'bot' refused: errorCode 3"),
                                     TopstepXError("/api/Account/search: HTTP 404 not found")])
def test_a_refusal_ends_it_at_once(lines, refusal):
    calls = []

    def login():
        calls.append(1)
        raise refusal
    with pytest.raises(TopstepXError):
        until_reachable("login", login, sleep=lambda s: pytest.fail("waited on a refusal"))
    assert calls == [1] and lines == []


class _Client:
    def __init__(self, fail: list[Exception]):
        self.fail = fail

    def call(self, path, body):
        if self.fail:
            raise self.fail.pop(0)
        return {"contracts": [{"id": "CON.F.US.MES.Z26", "activeContract": True}]}

    def contract(self, cid):
        return {"id": cid, "activeContract": True}


def test_contract_resolution_waits_for_the_broker_and_stops_on_a_refusal(lines):
    from datetime import date
    client = _Client([OutcomeUnknown("/api/Contract/search: connection failed (ConnectionError)")] * 4)
    cid, _ = resolve_with_client(client, "MES", date(2026, 11, 23), 5, sleep=lambda s: None)
    assert cid == "CON.F.US.MES.Z26" and len(lines) == 4 and lines[0].startswith("CONTRACT: resolving MES:")
    with pytest.raises(ContractError, match="refused"):
        resolve_with_client(_Client([AuthError("/api/Contract/search: HTTP 401")]), "MES", date(2026, 11, 23), 5,
                            sleep=lambda s: pytest.fail("waited on a refusal"))


def test_a_one_shot_tool_gives_up_after_its_wait(lines):
    """`scalper check` asks once, waits a few seconds at most, and says the broker did not answer."""
    from datetime import date
    from unittest import mock
    client = _Client([OutcomeUnknown("/api/Contract/search: connection failed (ConnectionError)")] * 100)
    pauses: list[float] = []
    clock = iter(range(0, 1000))                 # one second per look at the clock
    with mock.patch("common.topstepx.startup.time.monotonic", lambda: next(clock)):
        with pytest.raises(ContractError, match="did not answer in 5 s"):
            resolve_with_client(client, "MES", date(2026, 11, 23), 5, sleep=pauses.append, give_up_s=5)
    assert 0 < len(pauses) < 5
