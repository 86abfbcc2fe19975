"""The broker adapter's one conversion (services/orders/broker_view.py)."""
from __future__ import annotations

from decimal import Decimal

import pytest

from services.orders.broker_view import BadBrokerRecord, OrderUpdate, PositionUpdate, TradeUpdate


def test_order_update_from_hub_or_rest_json():
    o = OrderUpdate.of({"id": 7, "contractId": "C", "status": 7, "type": 4, "side": 1, "size": 2, "fillVolume": 0,
                        "customTag": "LE1:stop:0", "stopPrice": 6048.25, "limitPrice": None, "filledPrice": None})
    assert (o.id, o.status, o.type, o.side, o.size, o.tag) == (7, 7, 4, 1, 2, "LE1:stop:0")
    assert o.stop_price == Decimal("6048.25") and o.limit_price is None and not o.finished_unfilled
    assert OrderUpdate.of({"id": 8, "status": 5, "type": 2, "side": 0, "size": 1}).finished_unfilled


@pytest.mark.parametrize("raw", [{"status": 1}, {"id": 1, "status": 9}, {"id": 1, "status": "open"},
                                 {"id": 1, "status": 1, "side": 2}, {"id": 1, "status": 1, "type": 8}])
def test_unknown_codes_are_refused_with_one_line(raw):
    with pytest.raises(BadBrokerRecord) as e:
        OrderUpdate.of(raw)
    assert "\n" not in str(e.value)


def test_trade_and_position_updates():
    t = TradeUpdate.of({"id": 5, "orderId": 7, "contractId": "C", "side": 1, "size": 2, "price": 6050.5,
                        "fees": 0.37, "commissions": 0.5, "profitAndLoss": -12.5, "voided": False})
    assert (t.price, t.fees, t.pnl, t.order_id) == (Decimal("6050.5"), Decimal("0.87"), Decimal("-12.5"), 7)
    assert PositionUpdate.of({"contractId": "C", "type": 2, "size": 3, "averagePrice": 6050.25}).direction == -1
    flat = PositionUpdate.of({"contractId": "C", "type": 1, "size": 0})
    assert (flat.direction, flat.size) == (0, 0)
