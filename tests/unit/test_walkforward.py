"""Purged, embargoed walk-forward splits and the rule's P&L bookkeeping."""
from __future__ import annotations

import numpy as np

from services.inference import walkforward as wf
from services.inference.labels import Labels

S = 1_000_000_000


def test_a_purged_split_leaves_no_label_window_across_the_boundary():
    rng = np.random.default_rng(0)
    t0 = np.cumsum(rng.integers(1, 3, 5000)) * S
    t1 = t0 + rng.integers(1, 900, 5000) * S          # label windows up to 15 minutes
    embargo = 60 * S
    folds = wf.purged_splits(t0, t1, n_folds=4, embargo_ns=embargo, min_train=100)
    assert len(folds) == 4
    purged = 0
    for f in folds:
        first_test = t0[f.test[0]]
        assert np.all(t1[f.train] < first_test - embargo)        # every training label ends before the test block
        assert np.all(t0[f.train] < first_test)
        assert not np.intersect1d(f.train, f.test).size
        before = np.flatnonzero(t0 < first_test)
        purged += len(before) - len(f.train)
    assert purged > 0                                             # windows near the boundary were dropped


def test_holdout_is_purged_too():
    t0 = np.arange(1000) * S
    t1 = t0 + 50 * S
    fit, val = wf.holdout(t0, t1, np.arange(1000), 0.2, 10 * S)
    assert np.all(t1[fit] < t0[val[0]] - 10 * S) and len(val) == 200


def labels(pl, ps, el, es) -> Labels:
    n = len(pl)
    a = lambda x, t=float: np.array(x, dtype=t)
    return Labels(np.ones(n, dtype=int), np.ones(n, bool), a(pl), a(ps), a(el, np.int64), a(es, np.int64),
                  np.maximum(a(el, np.int64), a(es, np.int64)), {})


def test_rule_takes_one_position_at_a_time():
    t0 = np.arange(6, dtype=np.int64) * S
    lab = labels([2, 3, 4, 5, 6, 7], [-1, -1, -1, -1, -1, -1], [2 * S, 0, 4 * S, 0, 9 * S, 0], [0] * 6)
    d = np.array([1, 1, 1, 1, 1, 0])
    trades = wf.run_rule(t0, d, lab, np.arange(6))
    assert [(i, p) for i, _, p in trades] == [(0, 2.0), (2, 4.0), (4, 6.0)]   # rows 1 and 3 fall inside a trade
