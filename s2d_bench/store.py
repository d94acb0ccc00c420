"""The results store: one SQLite file that every run, ablation and `s2d-bench eval` writes to.

Leaderboards are rendered from it alone. Three tables, each keyed by what makes a row unique,
so writing the same thing twice (a rerun, a resumed grid, a second process) replaces a row and
never duplicates it:

  evals        one evaluation record: a model (node) under one eval config; the full record as JSON
  arms         which node is an arm's i-th stage, for a suite and seed
  diagnostics  per-node measurements that are not evaluations (the paper's C2 teacher-student KL)

SQLite in WAL mode with a busy timeout lets several processes (seeds run side by side, a
leaderboard read during a run) use the file at once; each write is one short transaction.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

SCHEMA = """
CREATE TABLE IF NOT EXISTS evals (
    key TEXT PRIMARY KEY, suite TEXT NOT NULL, node TEXT, stage TEXT, role TEXT, seed INTEGER,
    task TEXT, mean REAL, stderr REAL, k INTEGER, n INTEGER, timestamp REAL, record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS arms (
    suite TEXT NOT NULL, seed INTEGER NOT NULL, arm TEXT NOT NULL, position INTEGER NOT NULL,
    node TEXT NOT NULL, stage TEXT NOT NULL, PRIMARY KEY (suite, seed, arm, position)
);
CREATE TABLE IF NOT EXISTS diagnostics (
    suite TEXT NOT NULL, node TEXT NOT NULL, kind TEXT NOT NULL, record TEXT NOT NULL,
    PRIMARY KEY (suite, node, kind)
);
"""

DEFAULT_STORE = Path("results") / "s2d-bench.sqlite"
ENV = "S2D_STORE"  # overrides the default location (the test suite points it at a temporary file)


def resolve_store(path: str | Path | None = None) -> Path:
    """An explicit path, else $S2D_STORE, else results/s2d-bench.sqlite."""
    return Path(path or os.environ.get(ENV) or DEFAULT_STORE)


class Store:
    """A thin wrapper over the SQLite file; every method opens, writes and commits at once."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = resolve_store(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._use_wal()
        with self._connect() as db:
            db.executescript(SCHEMA)

    def _use_wal(self, attempts: int = 100) -> None:
        """Switch the file to write-ahead logging once (the mode persists in the file).

        SQLite answers "database is locked" at once, without waiting out the busy timeout, when two
        processes switch a new file's journal mode together (two ranks, two runs starting at once).
        """
        for attempt in range(attempts):
            try:
                db = sqlite3.connect(self.path, timeout=60.0)
                try:
                    db.execute("PRAGMA journal_mode=WAL")
                    return
                finally:
                    db.close()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == attempts - 1:
                    raise
                time.sleep(0.05 * (1 + random.random()))

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=60.0)
        try:
            with db:  # one transaction: committed on success, rolled back on error
                yield db
        finally:
            db.close()

    # ------------------------------------------------------------------ writing
    def put_eval(self, key: str, suite: str, record: dict[str, Any]) -> None:
        row = (key, suite, record.get("node"), record.get("stage"), record.get("role"), record.get("seed"), record.get("task"),
               record["mean"], record.get("stderr"), record.get("k"), record.get("n"), record.get("timestamp"), json.dumps(record))
        with self._connect() as db:
            db.execute("INSERT OR REPLACE INTO evals VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)

    def put_arms(self, suite: str, seed: int, arms: dict[str, list[tuple[str, str]]]) -> None:
        """arms: name -> [(node id, stage), ...] in order; an arm's old rows are replaced."""
        with self._connect() as db:
            for arm, path in arms.items():
                db.execute("DELETE FROM arms WHERE suite = ? AND seed = ? AND arm = ?", (suite, seed, arm))
                db.executemany("INSERT INTO arms VALUES (?, ?, ?, ?, ?, ?)",
                               [(suite, seed, arm, i, node, stage) for i, (node, stage) in enumerate(path)])

    def put_diagnostic(self, suite: str, node: str, kind: str, record: dict[str, Any]) -> None:
        with self._connect() as db:
            db.execute("INSERT OR REPLACE INTO diagnostics VALUES (?, ?, ?, ?)", (suite, node, kind, json.dumps(record)))

    # ------------------------------------------------------------------ reading
    def evals(self, suite: str | None = None) -> list[dict[str, Any]]:
        query, args = "SELECT suite, record FROM evals", ()
        if suite is not None:
            query, args = query + " WHERE suite = ?", (suite,)
        with self._connect() as db:
            rows = db.execute(query + " ORDER BY timestamp, key", args).fetchall()
        return [{**json.loads(record), "suite": s} for s, record in rows]

    def arms(self, suite: str) -> list[dict[str, Any]]:
        with self._connect() as db:
            rows = db.execute("SELECT seed, arm, position, node, stage FROM arms WHERE suite = ? ORDER BY seed, arm, position", (suite,)).fetchall()
        return [dict(zip(("seed", "arm", "position", "node", "stage"), row)) for row in rows]

    def diagnostics(self, suite: str) -> list[dict[str, Any]]:
        with self._connect() as db:
            rows = db.execute("SELECT node, kind, record FROM diagnostics WHERE suite = ? ORDER BY node, kind", (suite,)).fetchall()
        return [{"node": node, "kind": kind, **json.loads(record)} for node, kind, record in rows]

    def suites(self) -> list[str]:
        with self._connect() as db:
            return [row[0] for row in db.execute("SELECT DISTINCT suite FROM evals ORDER BY suite")]
