"""TopstepX (ProjectX Gateway) REST client on `requests`.

What it guarantees (topstepx_api.md §1, §5):
- one keep-alive session; every call POST + JSON; the envelope checked;
- the order writes (place, cancel, modify, close) sent straight on the session's own urllib3
  pool (requests is built on it), without requests' per-call work: 0.26 ms of client CPU a call
  against 0.8 ms, on the path from a fill to its stop; same connections, timeouts and errors;
- the token refreshed (Auth/validate, else a new login) before it expires, and
  re-obtained once on a 401;
- client-side rate limiting under the documented budgets (200/60 s, bars 50/30 s);
- reads retried with exponential backoff; writes (place, cancel, modify, close)
  never blindly retried: an unknown outcome raises OutcomeUnknown so the caller
  can look the order up by its customTag.
The token and API key never appear in an exception or a log line.
"""
from __future__ import annotations

import base64
import collections
import json
import random
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import msgspec
import requests
import urllib3
from loguru import logger

from common import broker_codes as codes  # noqa: F401  (the broker's enums: one table, re-exported)
from common.logging import register_secret


class TopstepXError(RuntimeError):
    """Base class; str() is one line for the log."""


class AuthError(TopstepXError):
    pass


class RateLimited(TopstepXError):
    pass


class OutcomeUnknown(TopstepXError):
    """A write whose result we did not see (timeout, dropped connection, 5xx)."""


@dataclass
class BrokerError(TopstepXError):
    """success=false: the broker answered and refused."""
    path: str
    code: int
    message: str
    payload: dict

    def __str__(self) -> str:
        return f"{self.path} refused: errorCode {self.code} {self.message or ''}".rstrip()


class RateLimiter:
    """Sliding-window limiter: at most `limit` calls in any `window_s` seconds."""

    def __init__(self, limit: int, window_s: float):
        self.limit = limit
        self.window_s = window_s
        self.calls: collections.deque[float] = collections.deque()
        self.lock = threading.Lock()

    def free(self) -> int:
        """Calls still allowed in the current window (a caller can keep a reserve for orders)."""
        with self.lock:
            now = time.monotonic()
            while self.calls and now - self.calls[0] >= self.window_s:
                self.calls.popleft()
            return self.limit - len(self.calls)

    def wait(self) -> float:
        waited = 0.0
        while True:
            with self.lock:
                now = time.monotonic()
                while self.calls and now - self.calls[0] >= self.window_s:
                    self.calls.popleft()
                if len(self.calls) < self.limit:
                    self.calls.append(now)
                    return waited
                pause = self.window_s - (now - self.calls[0]) + 0.001
            time.sleep(pause)
            waited += pause


def jwt_exp(token: str) -> float | None:
    """The `exp` claim (epoch seconds) of a JWT, without verifying it."""
    try:
        payload = token.split(".")[1]
        payload += "=" * (-len(payload) % 4)
        return float(json.loads(base64.urlsafe_b64decode(payload))["exp"])
    except Exception:
        return None


FAST_PATHS = frozenset({"/api/Order/place", "/api/Order/cancel", "/api/Order/modify", "/api/Position/closeContract",
                        "/api/Position/partialCloseContract"})


def fast_pool(session: requests.Session, base_url: str) -> urllib3.HTTPConnectionPool | None:
    """The urllib3 pool requests itself uses for this URL: its adapter's, with its TLS settings
    (certifi, REQUESTS_CA_BUNDLE, verify=False) and its connections, so the polls keep them warm
    for the next order (a pool of its own would idle out between trades: a TLS handshake on the
    stop's path). None when requests would go through a proxy: those writes stay on the session."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    env = session.merge_environment_settings(base_url, {}, None, None, None)
    if requests.utils.select_proxy(base_url, env.get("proxies") or {}):
        return None
    request = requests.Request("POST", base_url.rstrip("/") + "/").prepare()
    return session.get_adapter(request.url).get_connection_with_tls_context(request, env.get("verify", True), None,
                                                                              env.get("cert"))


def iso(ts: datetime | float) -> str:
    if isinstance(ts, (int, float)):
        ts = datetime.fromtimestamp(ts, tz=timezone.utc)
    return ts.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


class TopstepXClient:
    READ_PATHS = {
        "/api/Account/search", "/api/Contract/search", "/api/Contract/searchById", "/api/Contract/available",
        "/api/History/retrieveBars", "/api/Order/search", "/api/Order/searchOpen", "/api/Position/searchOpen",
        "/api/Trade/search", "/api/Auth/validate",
    }

    def __init__(self, base_url: str, username: str, api_key: str, timeout_s: float = 5.0,
                 write_timeout_s: float = 3.0, rate_limit_per_min: int = 200, bars_per_30s: int = 50,
                 refresh_margin_s: float = 300.0, read_retries: int = 3):
        self.base_url = base_url.rstrip("/")
        self.username = username
        self._api_key = api_key
        register_secret(api_key)
        self.timeout_s = timeout_s
        self.write_timeout_s = write_timeout_s
        self.refresh_margin_s = refresh_margin_s
        self.read_retries = read_retries
        self.http = requests.Session()
        self.http.headers.update({"Content-Type": "application/json", "Accept": "application/json"})
        self.fast = fast_pool(self.http, self.base_url)      # None: the writes use the session too
        self.fast_prefix = urlsplit(self.base_url).path
        self.fast_headers = {"Content-Type": "application/json", "Accept": "application/json",
                             "User-Agent": self.http.headers.get("User-Agent", "")}
        self._sent = threading.local()
        self.limiter = RateLimiter(rate_limit_per_min, 60.0)
        self.bars_limiter = RateLimiter(bars_per_30s, 30.0)
        self._token: str | None = None
        self._token_exp: float = 0.0
        self._token_life: float = 0.0
        self._auth_lock = threading.RLock()
        self.stats = collections.Counter()

    @classmethod
    def from_config(cls, api, share: float = 1.0, budget: str | None = None, reserve: int = 0) -> "TopstepXClient":
        """`share`: this process's part of the account's REST budget. The broker counts every
        call of the user, whichever process makes it, so the gateway and the keeper split it.
        `budget`: the path of a SharedBudget ledger instead: every process that names the same
        file draws from one budget (the whole of it), kept across restarts, with `reserve` calls
        only for urgent ones (common/topstepx/budget.py)."""
        key = api.api_key.get_secret_value() if api.api_key is not None else ""
        client = cls(api.base_url, api.username or "", key, timeout_s=api.request_timeout_s,
                     write_timeout_s=api.order_timeout_s,
                     rate_limit_per_min=max(1, int(api.rate_limit_per_min * share)),
                     bars_per_30s=max(1, int(api.bars_rate_limit_per_30s * share)))
        if budget is not None:
            from common.topstepx.budget import SharedBudget
            client.limiter = SharedBudget(budget, api.rate_limit_per_min, 60.0, reserve)
        return client

    # -- auth ------------------------------------------------------------
    def login(self) -> str:
        with self._auth_lock:
            body = self._raw("/api/Auth/loginKey", {"userName": self.username, "apiKey": self._api_key},
                             auth=False, timeout=self.timeout_s)
            token = body.get("token")
            if not body.get("success") or not token:
                raise AuthError(f"login as {self.username!r} refused: errorCode {body.get('errorCode')} "
                                f"{body.get('errorMessage') or ''}".rstrip())
            self._set_token(token)
            logger.info(f"AUTH: logged in to {self.base_url} as {self.username}")
            return token

    def _set_token(self, token: str) -> None:
        register_secret(token)
        self._token = token
        self._token_exp = jwt_exp(token) or (time.time() + 24 * 3600)
        self._token_life = max(0.0, self._token_exp - time.time())

    def token(self) -> str:
        """A token valid for at least `refresh_margin_s` more seconds."""
        with self._auth_lock:
            if self._token is None:
                return self.login()
            # the margin is at most a quarter of the lifetime: a short-lived token is not renewed on every call
            if time.time() > self._token_exp - min(self.refresh_margin_s, self._token_life / 4):
                try:
                    body = self._raw("/api/Auth/validate", {}, auth=True, timeout=self.timeout_s)
                    if body.get("success") and body.get("newToken"):
                        self._set_token(body["newToken"])
                        logger.info("AUTH: token refreshed")
                        return self._token
                except TopstepXError:
                    pass
                return self.login()
            return self._token

    def token_expires_at(self) -> float:
        return self._token_exp

    # -- transport -------------------------------------------------------
    def sent_ns(self) -> int:
        """perf_counter_ns when this thread's last request was handed to the connection."""
        return getattr(self._sent, "ns", 0)

    def _raw(self, path: str, body: dict, auth: bool, timeout: float) -> dict:
        headers = {"Authorization": f"Bearer {self._token}"} if auth and self._token else {}
        if self.fast is not None and path in FAST_PATHS:
            return self._raw_fast(path, body, headers, timeout)
        try:
            self._sent.ns = time.perf_counter_ns()
            r = self.http.post(self.base_url + path, json=body, headers=headers, timeout=timeout)
        except requests.Timeout:
            raise OutcomeUnknown(f"{path}: no answer within {timeout:.1f} s") from None
        except requests.ConnectionError as exc:
            raise OutcomeUnknown(f"{path}: connection failed ({type(exc).__name__})") from None
        return self._answer(path, r.status_code, r.content)

    def _raw_fast(self, path: str, body: dict, headers: dict, timeout: float) -> dict:
        """The same request on the urllib3 pool: a timeout or a broken connection is an unknown
        outcome (the request may have reached the broker), as on the session."""
        try:
            payload = json.dumps(body, allow_nan=False).encode()
        except ValueError as exc:
            raise TopstepXError(f"{path}: body is not valid JSON ({exc})") from None
        try:
            self._sent.ns = time.perf_counter_ns()
            r = self.fast.urlopen("POST", self.fast_prefix + path, body=payload, headers={**self.fast_headers, **headers},
                                  timeout=urllib3.Timeout(connect=timeout, read=timeout), retries=False,
                                  redirect=False)
        except urllib3.exceptions.NewConnectionError as exc:
            raise OutcomeUnknown(f"{path}: connection failed ({type(exc).__name__})") from None
        except urllib3.exceptions.TimeoutError:
            raise OutcomeUnknown(f"{path}: no answer within {timeout:.1f} s") from None
        except urllib3.exceptions.HTTPError as exc:
            raise OutcomeUnknown(f"{path}: connection failed ({type(exc).__name__})") from None
        return self._answer(path, r.status, r.data)

    def _answer(self, path: str, status: int, content: bytes) -> dict:
        """The HTTP status and body mapped to the envelope or to our errors (either transport)."""
        self.stats[f"http_{status}"] += 1
        if status == 401:
            raise AuthError(f"{path}: HTTP 401 (token missing or expired)")
        if status == 429:
            raise RateLimited(f"{path}: HTTP 429 rate limited")
        if status >= 500:
            raise OutcomeUnknown(f"{path}: HTTP {status}")
        if status != 200:
            raise TopstepXError(f"{path}: HTTP {status} {content[:200].decode('utf-8', 'replace')}")
        try:
            # msgspec, not json: a session's Order/search is ~100 KiB by midday, and a worker
            # thread parsing it holds the GIL (json 1.4 ms, msgspec 0.5 ms for 240 orders), which a
            # stop going out on another worker waits for
            data = msgspec.json.decode(content)
        except (ValueError, msgspec.DecodeError):
            raise OutcomeUnknown(f"{path}: answer is not JSON ({len(content)} bytes)") from None
        if not isinstance(data, dict):
            raise TopstepXError(f"{path}: answer is {type(data).__name__}, expected an object")
        return data

    def call(self, path: str, body: dict, *, write: bool | None = None) -> dict:
        """POST with auth, rate limit, envelope check. Reads retry; writes do not (except 401/429,
        which the broker answers before doing anything)."""
        is_write = (path not in self.READ_PATHS) if write is None else write
        limiter = self.bars_limiter if path == "/api/History/retrieveBars" else self.limiter
        attempts = 1 + self.read_retries
        delay = 0.2
        reauthed = False
        for attempt in range(attempts):
            limiter.wait()
            self.token()
            try:
                data = self._raw(path, body, auth=True,
                                 timeout=self.write_timeout_s if is_write else self.timeout_s)
            except AuthError:
                if reauthed:
                    raise
                reauthed = True
                logger.warning(f"AUTH: {path} answered 401; logging in again")
                with self._auth_lock:
                    self._token = None
                continue
            except RateLimited:
                self.stats["rate_limited"] += 1
                if attempt + 1 >= attempts:
                    raise
                pause = delay * (2 ** attempt) * (1 + random.random())
                logger.warning(f"API: {path} rate limited (429); waiting {pause:.2f} s")
                time.sleep(pause)
                continue
            except OutcomeUnknown:
                if is_write or attempt + 1 >= attempts:
                    raise
                time.sleep(delay * (2 ** attempt) * (1 + random.random()))
                continue
            if not data.get("success", False):
                raise BrokerError(path, int(data.get("errorCode") or -1), data.get("errorMessage") or "", data)
            return data
        raise TopstepXError(f"{path}: gave up after {attempts} attempts")

    # -- typed endpoints -------------------------------------------------
    def accounts(self, only_active: bool = True) -> list[dict]:
        return self.call("/api/Account/search", {"onlyActiveAccounts": only_active}).get("accounts") or []

    def contract(self, contract_id: str) -> dict | None:
        data = self.call("/api/Contract/searchById", {"contractId": contract_id})
        if data.get("contract"):
            return data["contract"]
        items = data.get("contracts") or []
        return items[0] if items else None

    def open_positions(self, account_id: int) -> list[dict]:
        return self.call("/api/Position/searchOpen", {"accountId": account_id}).get("positions") or []

    def open_orders(self, account_id: int) -> list[dict]:
        return self.call("/api/Order/searchOpen", {"accountId": account_id}).get("orders") or []

    def orders(self, account_id: int, start: datetime | float, end: datetime | float | None = None) -> list[dict]:
        body: dict[str, Any] = {"accountId": account_id, "startTimestamp": iso(start)}
        if end is not None:
            body["endTimestamp"] = iso(end)
        return self.call("/api/Order/search", body).get("orders") or []

    def trades(self, account_id: int, start: datetime | float, end: datetime | float | None = None) -> list[dict]:
        body: dict[str, Any] = {"accountId": account_id, "startTimestamp": iso(start)}
        if end is not None:
            body["endTimestamp"] = iso(end)
        return self.call("/api/Trade/search", body).get("trades") or []

    def place_order(self, account_id: int, contract_id: str, type_: int, side: int, size: int, *,
                    limit_price: Decimal | None = None, stop_price: Decimal | None = None,
                    custom_tag: str | None = None, stop_loss_ticks: int | None = None,
                    take_profit_ticks: int | None = None) -> int:
        """`stop_loss_ticks`/`take_profit_ticks`: a native Auto-OCO bracket, ticks signed from the
        entry (long: stop < 0 < target); refused in the account's Position Brackets mode."""
        body: dict[str, Any] = {"accountId": account_id, "contractId": contract_id, "type": type_,
                                "side": side, "size": size}
        if stop_loss_ticks is not None:
            body["stopLossBracket"] = {"ticks": stop_loss_ticks, "type": codes.STOP}
        if take_profit_ticks is not None:
            body["takeProfitBracket"] = {"ticks": take_profit_ticks, "type": codes.LIMIT}
        if limit_price is not None:
            body["limitPrice"] = float(limit_price)
        if stop_price is not None:
            body["stopPrice"] = float(stop_price)
        if custom_tag:
            body["customTag"] = custom_tag
        return int(self.call("/api/Order/place", body)["orderId"])

    def cancel_order(self, account_id: int, order_id: int) -> None:
        self.call("/api/Order/cancel", {"accountId": account_id, "orderId": order_id})

    def modify_order(self, account_id: int, order_id: int, *, size: int | None = None,
                     limit_price: Decimal | None = None, stop_price: Decimal | None = None) -> None:
        body: dict[str, Any] = {"accountId": account_id, "orderId": order_id}
        if size is not None:
            body["size"] = size
        if limit_price is not None:
            body["limitPrice"] = float(limit_price)
        if stop_price is not None:
            body["stopPrice"] = float(stop_price)
        self.call("/api/Order/modify", body)

    def close_contract(self, account_id: int, contract_id: str) -> None:
        """Close whatever the broker holds in the contract (reduce-only at the broker: it cannot
        open or flip a position). Refused when flat."""
        self.call("/api/Position/closeContract", {"accountId": account_id, "contractId": contract_id})

    def partial_close_contract(self, account_id: int, contract_id: str, size: int) -> None:
        """Close `size` contracts of the open position; refused when flat or size > |position|."""
        self.call("/api/Position/partialCloseContract",
                  {"accountId": account_id, "contractId": contract_id, "size": size})

    def close(self) -> None:
        self.http.close()
        if self.fast is not None:
            self.fast.close()             # (the session's pool: closed with it already; harmless)


def unwrap(payload: Any) -> Any:
    """User-hub payloads arrive as {action, data} live, bare in the docs: accept both."""
    if isinstance(payload, dict) and "data" in payload and isinstance(payload["data"], dict):
        return payload["data"]
    return payload


def parse_time(value: str | None) -> int:
    """ISO-8601 with offset or Z, any fraction length -> ns. 0 when missing."""
    if not value:
        return 0
    s = value.strip().replace("Z", "+00:00")
    frac = ""
    if "." in s:
        head, rest = s.split(".", 1)
        digits = ""
        i = 0
        while i < len(rest) and rest[i].isdigit():
            digits += rest[i]
            i += 1
        frac, s = digits, head + rest[i:]
    dt = datetime.fromisoformat(s)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    ns = (frac + "000000000")[:9]
    return int(dt.timestamp()) * 1_000_000_000 + int(ns)
