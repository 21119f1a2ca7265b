"""The external world of the conformance suite: an effect ledger and gates, shared across processes.

Worker processes and the suite meet in one SQLite file (``$PERDURE_CONFORMANCE_DIR/ledger.sqlite``):

* ``calls``: every execution of a step body (so a re-executed step is counted);
* ``effects``: side effects keyed by idempotency key -- the deduplicating external system;
* gates: a step body reaches an *armed* gate, records its arrival and waits until the suite releases it.
  That is how the suite holds a worker inside a step, SIGKILLs it there, and lets the re-executed step go;
* failure budgets: a step fails transiently while its budget lasts, across worker processes.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (name TEXT, run_id TEXT, key TEXT, ts REAL);
CREATE TABLE IF NOT EXISTS effects (key TEXT PRIMARY KEY, name TEXT, run_id TEXT);
CREATE TABLE IF NOT EXISTS gates (gate TEXT PRIMARY KEY, released INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS arrivals (gate TEXT, ts REAL);
CREATE TABLE IF NOT EXISTS budgets (name TEXT PRIMARY KEY, remaining INTEGER);
"""
ENV_DIR = "PERDURE_CONFORMANCE_DIR"


class Ledger:
    """One ledger file. Every method opens its own short transaction: safe across processes."""

    def __init__(self, directory: str | Path) -> None:
        self.path = Path(directory) / "ledger.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._db() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)

    def _db(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        # The ledger must outlive SIGKILLed processes, not a machine crash: no fsync. Step bodies write it
        # on their event loop, and an fsync that a busy disk holds for longer than a Temporal heartbeat
        # timeout (0.4 s in the test profile) got a live step re-run: a false "ran twice".
        db.execute("PRAGMA synchronous=OFF")
        return db

    def _exec(self, sql: str, *params: object) -> list[tuple[object, ...]]:
        db = self._db()
        try:
            return db.execute(sql, params).fetchall()
        finally:
            db.close()

    # --- calls and effects --------------------------------------------------------------------------
    def record_call(self, name: str, run_id: str, key: str = "") -> None:
        self._exec("INSERT INTO calls VALUES (?, ?, ?, ?)", name, run_id, key, time.time())

    def calls(self, run_id: str, name: str | None = None) -> int:
        if name is None:
            return int(self._exec("SELECT COUNT(*) FROM calls WHERE run_id=?", run_id)[0][0])  # type: ignore[call-overload]
        return int(self._exec("SELECT COUNT(*) FROM calls WHERE run_id=? AND name=?", run_id, name)[0][0])  # type: ignore[call-overload]

    def call_counts(self, run_id: str) -> dict[str, int]:
        rows = self._exec("SELECT name, COUNT(*) FROM calls WHERE run_id=? GROUP BY name ORDER BY name", run_id)
        return {str(n): int(c) for n, c in rows}  # type: ignore[call-overload]

    def keys_seen(self, run_id: str, name: str) -> list[str]:
        rows = self._exec("SELECT DISTINCT key FROM calls WHERE run_id=? AND name=? ORDER BY key", run_id, name)
        return [str(r[0]) for r in rows]

    def apply_effect(self, key: str, name: str, run_id: str) -> bool:
        """The external system: applies an effect once per idempotency key. True if it was new."""
        rows = self._exec(
            "INSERT INTO effects VALUES (?, ?, ?) ON CONFLICT(key) DO NOTHING RETURNING key", key, name, run_id
        )
        return bool(rows)

    def effects(self, run_id: str) -> int:
        return int(self._exec("SELECT COUNT(*) FROM effects WHERE run_id=?", run_id)[0][0])  # type: ignore[call-overload]

    # --- gates --------------------------------------------------------------------------------------
    def arm(self, gate: str) -> None:
        self._exec("INSERT OR REPLACE INTO gates VALUES (?, 0)", gate)

    def release(self, gate: str) -> None:
        self._exec("INSERT OR REPLACE INTO gates VALUES (?, 1)", gate)

    def arrivals(self, gate: str) -> int:
        return int(self._exec("SELECT COUNT(*) FROM arrivals WHERE gate=?", gate)[0][0])  # type: ignore[call-overload]

    async def checkpoint(self, gate: str) -> None:
        """Called by step bodies: record the arrival; if the gate is armed, wait for its release."""
        self._exec("INSERT INTO arrivals VALUES (?, ?)", gate, time.time())
        delay = 0.005
        while not self._released(gate):
            # Back off to 50 ms: twenty steps held at gates must not eat the worker's CPU (an engine's
            # heartbeats run on the same event loop).
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)

    def checkpoint_sync(self, gate: str) -> None:
        """:meth:`checkpoint` for a sync step body, which waits in its own thread."""
        self._exec("INSERT INTO arrivals VALUES (?, ?)", gate, time.time())
        delay = 0.005
        while not self._released(gate):
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def _released(self, gate: str) -> bool:
        rows = self._exec("SELECT released FROM gates WHERE gate=?", gate)
        return not rows or bool(rows[0][0])

    async def wait_arrivals(self, gate: str, count: int = 1, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while self.arrivals(gate) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"gate {gate!r}: {self.arrivals(gate)} of {count} arrivals after {timeout} s")
            await asyncio.sleep(0.01)

    # --- transient failures -------------------------------------------------------------------------
    def set_budget(self, name: str, failures: int) -> None:
        self._exec("INSERT OR REPLACE INTO budgets VALUES (?, ?)", name, failures)

    def take_failure(self, name: str) -> bool:
        """True (and one less left) while ``name`` still has failures to spend."""
        rows = self._exec(
            "UPDATE budgets SET remaining = remaining - 1 WHERE name=? AND remaining > 0 RETURNING remaining", name
        )
        return bool(rows)


_ledgers: dict[str, Ledger] = {}


def current_ledger() -> Ledger:
    """The ledger of the suite run this process serves (``$PERDURE_CONFORMANCE_DIR``)."""
    directory = os.environ.get(ENV_DIR)
    if not directory:
        raise RuntimeError(f"{ENV_DIR} is not set: conformance workflows run only under the conformance harness")
    ledger = _ledgers.get(directory)
    if ledger is None:
        ledger = _ledgers[directory] = Ledger(directory)
    return ledger
