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


def test_shared_budget_is_one_budget_across_processes_and_restarts(tmp_path):
    from common.topstepx.budget import SharedBudget, urgent
    path = tmp_path / "state" / "budget.sqlite"
    gw = SharedBudget(path, limit=10, window_s=60.0, reserve=3)
    keeper = SharedBudget(path, limit=10, window_s=60.0, reserve=3)
    assert gw.free() == 7
    for _ in range(4):
        gw.wait()
    for _ in range(3):
        keeper.wait()
    assert gw.free() == keeper.free() == 0                  # 7 ordinary calls made between them
    gw.close()
    restarted = SharedBudget(path, limit=10, window_s=60.0, reserve=3)
    assert restarted.free() == 0                            # a restart does not start with a full budget
    with urgent():                                          # the reserve is for protection and cancels
        for _ in range(3):
            assert restarted.wait() == 0.0
    assert restarted.free() == -3
    # the window slides: calls older than a minute are forgotten
    restarted.db.execute("UPDATE calls SET t = t - 61")
    assert restarted.free() == 7


def test_from_config_with_a_budget_file_uses_the_whole_account_budget(tmp_path):
    from common.topstepx.budget import SharedBudget
    api = ApiConfig(api_key=SecretStr("k"), rate_limit_per_min=200)
    c = TopstepXClient.from_config(api, share=0.65, budget=str(tmp_path / "b.sqlite"), reserve=20)
    assert isinstance(c.limiter, SharedBudget) and c.limiter.limit == 200 and c.limiter.free() == 180
