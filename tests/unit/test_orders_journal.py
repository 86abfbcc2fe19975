"""The gateway journal survives a reopen (a kill -9 is a reopen without close)."""
from __future__ import annotations

from services.orders.journal import Journal


def test_journal_round_trip(tmp_path):
    j = Journal(tmp_path / "state" / "j.sqlite")
    assert j.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    j.put_intent("LE1", "enter", "placing", {"size": 1})
    j.put_order("LE1:entry:0", "LE1", "entry", 0, {"size": 1})
    j.set_order_id("LE1:entry:0", 42)
    j.set_reply("LE1", {"key": "LE1", "ok": True, "status": "accepted", "message": "", "detail": {"order_id": 42}})
    j.set_intent("LE1", state="open", data={"size": 1, "filled": 1})
    assert j.add_fill(7, 42, {"day": "2026-11-23", "net": -37})
    assert not j.add_fill(7, 42, {"day": "2026-11-23", "net": -37})      # de-duplicated by trade id
    j.set("halt", {"halted": True, "reason": "x"})
    # no close(): as after kill -9
    k = Journal(tmp_path / "state" / "j.sqlite")
    it = k.intent("LE1")
    assert it["state"] == "open" and it["data"]["filled"] == 1 and it["reply"]["detail"] == {"order_id": 42}
    assert [(o["tag"], o["order_id"]) for o in k.orders()] == [("LE1:entry:0", 42)]
    assert k.fill_ids() == {7}
    assert k.get("halt")["halted"] and k.get("missing", 5) == 5
    assert [i["key"] for i in k.intents(("open",))] == ["LE1"] and k.intents(("done",)) == []
    # an order row written before the send keeps its id when re-put without one
    k.put_order("LE1:entry:0", "LE1", "entry", 0, {"size": 1, "status": 2})
    assert k.orders()[0]["order_id"] == 42
    k.close()


def test_a_new_key_is_answered_without_a_query_and_a_forgotten_one_is_gone(tmp_path):
    j = Journal(tmp_path / "j.sqlite")
    j.put_intent("LE1", "enter", "new", {})
    j.flush()
    k = Journal(tmp_path / "j.sqlite")                  # a restart: the keys come from the file
    assert k.intent("LE1")["action"] == "enter"
    queries = []
    k.db.set_trace_callback(queries.append)
    assert k.intent("LE2") is None and queries == []     # unknown: no query at all
    k.forget_intent("LE1")
    assert k.intent("LE1") is None and Journal(tmp_path / "j.sqlite").intent("LE1") is None

