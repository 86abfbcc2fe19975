"""A corrupt or truncated state file is one line naming the file and the way out (issue 15, item 3)."""
from __future__ import annotations

import json

import pytest

from common.statefile import EXIT_BAD_STATE, BadStateFile, move_aside
from services.orders.journal import Journal


def journal_with_rows(path):
    j = Journal(path)
    for i in range(300):
        j.put_intent(f"k{i}", "enter", "done", {"cmd": {"key": f"k{i}", "pad": "x" * 200}})
    j.close()
    return path


def test_a_good_journal_opens_and_says_whether_it_was_new(tmp_path):
    j = Journal(tmp_path / "orders_1.sqlite")
    assert j.created
    j.put_intent("k", "enter", "done", {})
    j.close()
    again = Journal(tmp_path / "orders_1.sqlite")
    assert not again.created and again.intent("k")["state"] == "done"
    again.close()


@pytest.mark.parametrize("damage", ["garbage", "truncated", "zeroed_middle", "last_page_cut"])
def test_a_damaged_journal_raises_one_line_naming_the_file_and_the_command(tmp_path, damage):
    path = journal_with_rows(tmp_path / "orders_1.sqlite")
    data = path.read_bytes()
    if damage == "garbage":
        path.write_bytes(b"this is not a database" * 100)
    elif damage == "truncated":
        path.write_bytes(data[: len(data) // 3])
    elif damage == "last_page_cut":
        path.write_bytes(data[:-4096])      # quick_check alone passes this one
    else:
        mid = len(data) // 2
        path.write_bytes(data[:mid] + bytes(8192) + data[mid + 8192:])
    with pytest.raises(BadStateFile) as info:
        Journal(path)
    line = info.value.line()
    assert "\n" not in line and str(path) in line and "scalper recover orders" in line
    assert info.value.service == "orders"


def test_stop_returns_the_distinct_exit_code():
    assert BadStateFile("positions", "/x/positions.json", "JSONDecodeError").stop() == EXIT_BAD_STATE == 3


def test_move_aside_keeps_every_companion_file(tmp_path):
    path = tmp_path / "orders_1.sqlite"
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"orders_1.sqlite{suffix}").write_text(suffix or "db")
    moved = move_aside(path)
    assert len(moved) == 3 and not any(p.exists() for p in tmp_path.glob("orders_1.sqlite*") if ".corrupt-" not in p.name)
    assert sorted(p.read_text() for p in moved) == ["-shm", "-wal", "db"]
    assert all(".corrupt-" in p.name for p in moved)


def test_recover_moves_only_unreadable_files(tmp_path):
    from common.cli import main
    from tests.harness.config import write_config
    cfg = write_config(tmp_path)
    state = tmp_path / "logs" / "state"
    journal_with_rows(state / "orders_7.sqlite")
    bad = state / "orders_8.sqlite"
    bad.write_bytes(b"\x00" * 5000)
    assert main(["--config", str(cfg), "recover", "orders"]) == 0
    assert (state / "orders_7.sqlite").exists() and not bad.exists()
    assert len(list(state.glob("orders_8.sqlite.corrupt-*"))) == 1
    (state / "positions.json").write_text('{"day": "2026-11-23", "balance_cen')
    assert main(["--config", str(cfg), "recover", "positions"]) == 0
    assert not (state / "positions.json").exists()
    (state / "positions.json").write_text(json.dumps({"day": "2026-11-23"}))
    assert main(["--config", str(cfg), "recover", "positions"]) == 0
    assert (state / "positions.json").exists()
