"""The hub clients' keep-alive settings (api.hub_*): defaults, the one-line error, the mapping
to HubClient's arguments."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from common.config import ApiConfig
from common.topstepx.hub import HubClient, hub_timing


def test_defaults_fit_the_servers_timeouts():
    api = ApiConfig()
    assert 10 <= api.hub_keep_alive_s <= 15, "a ping every 10-15 s, under the server's 30 s client timeout"
    assert api.hub_server_timeout_s == 30, "twice the server's 15 s KeepAliveInterval"
    hub = HubClient("http://127.0.0.1:1/hubs/market", lambda: "t", **hub_timing(api))
    assert (hub.keep_alive_s, hub.server_timeout_s, hub.token_refresh_margin_s) == (10, 30, 120)


def test_a_keep_alive_not_below_the_timeout_is_refused_naming_both_keys():
    with pytest.raises(ValidationError) as err:
        ApiConfig(hub_keep_alive_s=30, hub_server_timeout_s=30)
    text = str(err.value)
    assert "api.hub_keep_alive_s" in text and "api.hub_server_timeout_s" in text
