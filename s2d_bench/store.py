"""The results store: one SQLite file that every run, ablation and `s2d-bench eval` writes to.

Leaderboards are rendered from it alone. Three tables, each keyed by what makes a row unique,
so writing the same thing twice (a rerun, a resumed grid, a second process) replaces a row and
never duplicates it:

  evals        one evaluation record: a model (node) under one eval config; the full record as JSON
  arms         which node is an arm's i-th stage, for a suite, config and seed (the config hash
               keeps a changed config's arms apart from the old ones; leaderboards show the newest)
  diagnostics  per-node measurements that are not evaluations (the paper's C2 teacher-student KL)

SQLite in WAL mode with a busy timeout lets several processes (seeds run side by side, a
leaderboard read during a run) use the file at once; each write is one short transaction.
The file is created by the first write, so a command that fails leaves none behind. Everything
in it is also on disk in run directories, so `s2d-bench store rebuild` can make it again.
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

from s2d_bench.errors import UserError

SCHEMA = """
CREATE TABLE IF NOT EXISTS evals (
    key TEXT PRIMARY KEY, suite TEXT NOT NULL, node TEXT, stage TEXT, role TEXT, seed INTEGER,
    task TEXT, mean REAL, stderr REAL, k INTEGER, n INTEGER, timestamp REAL, record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS arms (
    suite TEXT NOT NULL, config TEXT NOT NULL, seed INTEGER NOT NULL, arm TEXT NOT NULL, position INTEGER NOT NULL,
    node TEXT NOT NULL, stage TEXT NOT NULL, written REAL NOT NULL, PRIMARY KEY (suite, config, seed, arm, position)
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
        self._ready = False
        if self.path.exists():
            self._open()

    def _open(self) -> None:
        """Create (first write) or check the file: WAL mode, the schema, arms rows from before configs were kept."""
        if self._ready:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._use_wal()
            with self._connect() as db:
                columns = [row[1] for row in db.execute("PRAGMA table_info(arms)")]
                if columns and "config" not in columns:  # a store written before arms were kept per config
                    db.execute("ALTER TABLE arms RENAME TO arms_v1")
                db.executescript(SCHEMA)
                if columns and "config" not in columns:
                    db.execute("INSERT INTO arms SELECT suite, '', seed, arm, position, node, stage, 0 FROM arms_v1")
                    db.execute("DROP TABLE arms_v1")
        except sqlite3.DatabaseError as exc:
            raise UserError(f"results store {self.path} is not a readable SQLite database ({exc}); move it aside and run "
                            "`s2d-bench store rebuild RUN_DIR ...` to make it again from the run directories") from None
        self._ready = True

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

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        self._open()
        with self._connect() as db:
            yield db

    def _read(self, query: str, args: tuple = ()) -> list[tuple]:
        """Rows of a query; a store that was never written holds none."""
        if not self.path.exists():
            return []
        self._open()
        with self._connect() as db:
            return db.execute(query, args).fetchall()

    # ------------------------------------------------------------------ writing
    def put_eval(self, key: str, suite: str, record: dict[str, Any], replaces: str | None = None) -> None:
        """The evaluation's row under `key` (`identity.eval_key`), replacing the row of that key and the one under `replaces`
        (the key an older store gave the same evaluation, `identity.legacy_eval_key`)."""
        row = (key, suite, record.get("node"), record.get("stage"), record.get("role"), record.get("seed"), record.get("task"),
               record["mean"], record.get("stderr"), record.get("k"), record.get("n"), record.get("timestamp"), json.dumps(record))
        with self._write() as db:
            if replaces is not None and replaces != key:
                db.execute("DELETE FROM evals WHERE key = ?", (replaces,))
            db.execute("INSERT OR REPLACE INTO evals VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)

    def put_arms(self, suite: str, seed: int, arms: dict[str, list[tuple[str, str]]], config: str = "", written: float | None = None) -> None:
        """arms: name -> [(node id, stage), ...] in order, as config `config` (its hash) plans them; that arm's old rows are replaced."""
        written = time.time() if written is None else written
        with self._write() as db:
            for arm, path in arms.items():
                db.execute("DELETE FROM arms WHERE suite = ? AND config = ? AND seed = ? AND arm = ?", (suite, config, seed, arm))
                db.executemany("INSERT INTO arms VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                               [(suite, config, seed, arm, i, node, stage, written) for i, (node, stage) in enumerate(path)])

    def put_diagnostic(self, suite: str, node: str, kind: str, record: dict[str, Any]) -> None:
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO diagnostics VALUES (?, ?, ?, ?)", (suite, node, kind, json.dumps(record)))

    # ------------------------------------------------------------------ reading
    def evals(self, suite: str | None = None) -> list[dict[str, Any]]:
        query, args = "SELECT suite, record FROM evals", ()
        if suite is not None:
            query, args = query + " WHERE suite = ?", (suite,)
        return [{**json.loads(record), "suite": s} for s, record in self._read(query + " ORDER BY timestamp, key", args)]

    def arms(self, suite: str, every_config: bool = False) -> list[dict[str, Any]]:
        """The suite's arm rows: those of its newest config (the one last run), or of every config."""
        rows = self._read("SELECT config, seed, arm, position, node, stage, written FROM arms WHERE suite = ? "
                          "ORDER BY config, seed, arm, position", (suite,))
        out = [dict(zip(("config", "seed", "arm", "position", "node", "stage", "written"), row)) for row in rows]
        if out and not every_config:
            newest = max(out, key=lambda r: r["written"])["config"]
            out = [r for r in out if r["config"] == newest]
        return out

    def diagnostics(self, suite: str) -> list[dict[str, Any]]:
        rows = self._read("SELECT node, kind, record FROM diagnostics WHERE suite = ? ORDER BY node, kind", (suite,))
        return [{"node": node, "kind": kind, **json.loads(record)} for node, kind, record in rows]

    def suites(self) -> list[str]:
        return [row[0] for row in self._read("SELECT DISTINCT suite FROM evals ORDER BY suite")]
