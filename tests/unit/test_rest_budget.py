"""The REST budget is the account's: processes split it, and the gateway can see what is left."""
from pydantic import SecretStr

from common.config import ApiConfig
from common.topstepx.rest import RateLimiter, TopstepXClient


def test_free_counts_the_calls_left_in_the_window():
    lim = RateLimiter(3, 60.0)
    assert lim.free() == 3
    lim.wait()
    lim.wait()
    assert lim.free() == 1
    lim.calls[0] -= 61            # the first call left the window
    assert lim.free() == 2


def test_from_config_takes_this_process_share_of_the_budget():
    api = ApiConfig(api_key=SecretStr("k"), rate_limit_per_min=200, bars_rate_limit_per_30s=50)
    gw = TopstepXClient.from_config(api, share=0.65)
    keeper = TopstepXClient.from_config(api, share=0.3)
    assert gw.limiter.limit == 130 and keeper.limiter.limit == 60
    assert gw.limiter.limit + keeper.limiter.limit < 200
    assert TopstepXClient.from_config(api).limiter.limit == 200
    assert TopstepXClient.from_config(api, share=0.001).limiter.limit == 1
