"""The gateway's journal: SQLite in WAL mode (stdlib sqlite3). Every intent (command), every
order the gateway sends (written BEFORE it is sent, keyed by its customTag), every fill it has
published (by trade id) and the latched halt, so a restarted gateway knows what it sent."""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import sqlite3
import time
from pathlib import Path
from typing import Any, Callable

from common.statefile import BadStateFile

SCHEMA = """
CREATE TABLE IF NOT EXISTS intents (key TEXT PRIMARY KEY, action TEXT, state TEXT, data TEXT,
                                    reply TEXT, created_ns INTEGER);
CREATE TABLE IF NOT EXISTS orders (tag TEXT PRIMARY KEY, order_id INTEGER, key TEXT, leg TEXT,
                                   attempt INTEGER, data TEXT, created_ns INTEGER);
CREATE INDEX IF NOT EXISTS orders_by_id ON orders(order_id);
CREATE TABLE IF NOT EXISTS fills (trade_id INTEGER PRIMARY KEY, order_id INTEGER, data TEXT);
CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v TEXT);
"""


@functools.cache
def _names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def as_record(obj: Any) -> dict:
    """A dataclass of plain fields (a command, a reply, a fill, an intent) as the dict the journal
    stores. dataclasses.asdict deep-copies every value: 44-81 us a call on this box, twice on the
    way from a fill to its stop; a reply's detail dict is shared, not copied (it is serialized)."""
    return {name: getattr(obj, name) for name in _names(type(obj))}


def _check_size(path: Path) -> None:
    """A file cut short after a checkpoint: SQLite reads what is left without complaint (the
    lost pages may hold no index it checks), so compare the size with the header's page count."""
    try:
        with open(path, "rb") as f:
            head = f.read(100)
        size = path.stat().st_size
    except FileNotFoundError:
        return
    if len(head) < 100 or not head.startswith(b"SQLite format 3\x00"):
        return            # not a database at all: sqlite3 says so itself
    page = int.from_bytes(head[16:18], "big")
    page = 65536 if page == 1 else page
    pages = int.from_bytes(head[28:32], "big")
    if head[24:28] == head[92:96] and pages and size < page * pages:
        raise sqlite3.DatabaseError(f"truncated: {size} bytes, its header says {page * pages}")


CACHE_KIB = 256                  # SQLite page cache per connection, KiB

class Journal:
    def __init__(self, path: str | Path):
        """Open (or create) the journal. A corrupt or truncated file raises BadStateFile (one
        line naming the file and `scalper recover orders`), never a raw sqlite3 traceback."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.created = not self.path.exists()
        self.db = None
        try:
            _check_size(self.path)
            self.db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            # a small page cache: SQLite's default (2 MB) fills as the journal grows through the
            # day and was most of the gateway's memory growth; the OS caches the file anyway
            self.db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
            self.db.executescript(SCHEMA)
            check = [r[0] for r in self.db.execute("PRAGMA quick_check")]
            if check != ["ok"]:
                raise sqlite3.DatabaseError("; ".join(map(str, check[:2])))
            # every intent key, in memory: a new command's duplicate check is a set lookup, not
            # a query (91 us cold at one command a second); only this process writes the journal
            self._keys = {r[0] for r in self.db.execute("SELECT key FROM intents")}
        except sqlite3.DatabaseError as exc:
            if self.db is not None:
                self.db.close()
            raise BadStateFile("orders", self.path, f"{type(exc).__name__}: {exc}") from None

    @contextlib.contextmanager
    def transaction(self):
        """The writes of one step (a command, its intent and its entry's row; a fill and its
        intent; the stop's and target's rows) in one commit instead of one each. Nested: joins
        the open one. flush() inside commits early: a row must be on disk before its order is
        sent (send() flushes); later writes in the block are then committed one by one."""
        if self.db.in_transaction:
            yield
            return
        self.db.execute("BEGIN")
        try:
            yield
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise
        self.flush()

    def flush(self) -> None:
        """Commit the open transaction, if any."""
        if self.db.in_transaction:
            self.db.execute("COMMIT")

    # -- intents ---------------------------------------------------------
    def put_intent(self, key: str, action: str, state: str, data: dict) -> None:
        self._keys.add(key)
        self.db.execute("INSERT INTO intents(key, action, state, data, reply, created_ns) VALUES (?,?,?,?,NULL,?) "
                        "ON CONFLICT(key) DO UPDATE SET state=excluded.state, data=excluded.data",
                        (key, action, state, json.dumps(data), time.time_ns()))

    def set_intent(self, key: str, *, state: str | None = None, data: dict | None = None) -> None:
        if state is not None and data is not None:      # one statement, one commit
            self.db.execute("UPDATE intents SET state=?, data=? WHERE key=?", (state, json.dumps(data), key))
            return
        if state is not None:
            self.db.execute("UPDATE intents SET state=? WHERE key=?", (state, key))
        if data is not None:
            self.db.execute("UPDATE intents SET data=? WHERE key=?", (json.dumps(data), key))

    def set_reply(self, key: str, reply: dict, done_if_new: bool = False, action: str | None = None,
                  cmd: dict | None = None) -> None:
        """`done_if_new`: a command that made no intent of its own (state still new) is done.
        With `action`, the row is made if there is none (an entry refused before its intent was
        written: one statement for its record and its reply)."""
        done = ", state=CASE state WHEN 'new' THEN 'done' ELSE state END" if done_if_new else ""
        if action is not None:
            self._keys.add(key)
            self.db.execute("INSERT INTO intents(key, action, state, data, reply, created_ns) VALUES (?,?,'done',?,?,?) "
                            f"ON CONFLICT(key) DO UPDATE SET reply=excluded.reply{done}",
                            (key, action, json.dumps({"cmd": cmd or {}}), json.dumps(reply), time.time_ns()))
            return
        self.db.execute(f"UPDATE intents SET reply=?{done} WHERE key=?", (json.dumps(reply), key))

    def forget_intent(self, key: str) -> None:
        self._keys.discard(key)
        self.db.execute("DELETE FROM intents WHERE key=?", (key,))

    def intent(self, key: str) -> dict | None:
        if key not in self._keys:
            return None
        row = self.db.execute("SELECT key, action, state, data, reply FROM intents WHERE key=?", (key,)).fetchone()
        return self._intent_row(row) if row else None

    def intents(self, states: tuple[str, ...] | None = None) -> list[dict]:
        rows = self.db.execute("SELECT key, action, state, data, reply FROM intents ORDER BY created_ns").fetchall()
        out = [self._intent_row(r) for r in rows]
        return [r for r in out if states is None or r["state"] in states]

    @staticmethod
    def _intent_row(row) -> dict:
        return {"key": row[0], "action": row[1], "state": row[2], "data": json.loads(row[3] or "{}"),
                "reply": json.loads(row[4]) if row[4] else None}

    # -- orders ----------------------------------------------------------
    def put_order(self, tag: str, key: str, leg: str, attempt: int, data: dict, order_id: int | None = None) -> None:
        self.db.execute("INSERT INTO orders(tag, order_id, key, leg, attempt, data, created_ns) VALUES (?,?,?,?,?,?,?) "
                        "ON CONFLICT(tag) DO UPDATE SET order_id=COALESCE(excluded.order_id, order_id), "
                        "data=excluded.data",
                        (tag, order_id, key, leg, attempt, json.dumps(data), time.time_ns()))

    def set_order_id(self, tag: str, order_id: int) -> None:
        self.db.execute("UPDATE orders SET order_id=? WHERE tag=?", (order_id, tag))

    def orders(self) -> list[dict]:
        rows = self.db.execute("SELECT tag, order_id, key, leg, attempt, data FROM orders ORDER BY created_ns").fetchall()
        return [self._order_row(r) for r in rows]

    def order(self, tag: str) -> dict | None:
        """One order by its tag (the gateway's book forgets finished orders; this does not)."""
        row = self.db.execute("SELECT tag, order_id, key, leg, attempt, data FROM orders WHERE tag=?", (tag,)).fetchone()
        return self._order_row(row) if row else None

    def order_by_id(self, order_id: int) -> dict | None:
        row = self.db.execute("SELECT tag, order_id, key, leg, attempt, data FROM orders WHERE order_id=?",
                              (order_id,)).fetchone()
        return self._order_row(row) if row else None

    def orders_of_key(self, key: str) -> list[dict]:
        """Every order of one intent key (their tags start with `key:`: a range on the primary key)."""
        rows = self.db.execute("SELECT tag, order_id, key, leg, attempt, data FROM orders WHERE tag >= ? AND tag < ? "
                               "AND key=? ORDER BY created_ns", (key + ":", key + ";", key)).fetchall()
        return [self._order_row(r) for r in rows]

    @staticmethod
    def _order_row(r) -> dict:
        return {"tag": r[0], "order_id": r[1], "key": r[2], "leg": r[3], "attempt": r[4], "data": json.loads(r[5] or "{}")}

    # -- fills -----------------------------------------------------------
    def add_fill(self, trade_id: int, order_id: int, data: dict) -> bool:
        """True if new (first time this trade id is seen)."""
        cur = self.db.execute("INSERT OR IGNORE INTO fills(trade_id, order_id, data) VALUES (?,?,?)",
                              (trade_id, order_id, json.dumps(data)))
        return cur.rowcount == 1

    def has_fill(self, trade_id: int) -> bool:
        return self.db.execute("SELECT 1 FROM fills WHERE trade_id=?", (trade_id,)).fetchone() is not None

    def fill_ids(self) -> set[int]:
        return {r[0] for r in self.db.execute("SELECT trade_id FROM fills")}

    # -- key/value (halt latch, ...) -------------------------------------
    def get(self, k: str, default: Any = None) -> Any:
        row = self.db.execute("SELECT v FROM kv WHERE k=?", (k,)).fetchone()
        return json.loads(row[0]) if row else default

    def set(self, k: str, v: Any) -> None:
        self.db.execute("INSERT INTO kv(k, v) VALUES (?,?) ON CONFLICT(k) DO UPDATE SET v=excluded.v", (k, json.dumps(v)))

    def checkpoint_when_idle(self, hot, every_s: float = 5.0, backstop_pages: int = 20_000,
                             busy: Callable[[], bool] | None = None) -> None:
        """SQLite's automatic WAL checkpoint runs inside whichever commit crosses 1000 pages, on
        the hot path (5 ms at p99.9, up to 70 ms seen). Moved to `hot`'s idle time
        (common/hotpath.py); the automatic one stays as a backstop far out, for a loop never idle.
        `busy`: the loop is waiting on the broker (a stop in flight polls as idle): skip, try later."""
        self.db.execute(f"PRAGMA wal_autocheckpoint={int(backstop_pages)}")
        hot.add_idle_task(lambda: None if busy is not None and busy() else self.checkpoint(), every_s)

    def checkpoint(self) -> None:
        """Copy the WAL into the database without waiting on readers (PASSIVE)."""
        self.db.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def close(self) -> None:
        try:
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            self.db.close()
