import multiprocessing as mp
import time

from s2d_bench.store import Store


def _writer(path: str, worker: int) -> None:
    store = Store(path)
    for i in range(40):
        store.put_eval(f"own-{worker}-{i}", "suite", {"node": f"n{worker}-{i}", "task": "t", "mean": i / 40, "timestamp": i})
        store.put_eval(f"shared-{i % 10}", "suite", {"node": f"s{i % 10}", "task": "t", "mean": 0.5, "timestamp": i})
    store.put_arms("suite", worker, {"full": [(f"n{worker}-0", "base"), (f"n{worker}-1", "opd")]})


def test_two_processes_writing_at_once_lose_nothing_and_duplicate_nothing(tmp_path):
    path = str(tmp_path / "s.sqlite")
    Store(path)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, w)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    store = Store(path)
    records = store.evals("suite")
    assert len(records) == 2 * 40 + 10  # own rows from both, each shared key once
    assert len({r["node"] for r in records}) == len(records)
    assert [(r["seed"], r["position"]) for r in store.arms("suite")] == [(0, 0), (0, 1), (1, 0), (1, 1)]


def test_rewriting_a_key_replaces_the_row_and_arms_are_replaced_per_arm(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    store.put_eval("k", "a", {"node": "n", "task": "t", "mean": 0.1, "timestamp": 1})
    store.put_eval("k", "a", {"node": "n", "task": "t", "mean": 0.2, "timestamp": 2})
    assert [r["mean"] for r in store.evals("a")] == [0.2]
    store.put_arms("a", 0, {"x": [("n1", "base"), ("n2", "opd"), ("n3", "student_rl")]})
    store.put_arms("a", 0, {"x": [("n1", "base"), ("n4", "warmup")]})
    assert [r["node"] for r in store.arms("a")] == ["n1", "n4"]
    assert store.suites() == ["a"] and store.evals("other") == []


def _opener(path: str, start, worker: int) -> None:
    start.wait()  # every process opens the brand-new file at the same moment, as two ranks or two runs do
    Store(path).put_arms("suite", worker, {"full": [("n", "base")]})


def test_processes_creating_one_new_store_at_once_all_succeed(tmp_path):
    ctx = mp.get_context("spawn")
    for attempt in range(3):
        path = str(tmp_path / f"new-{attempt}.sqlite")
        start = ctx.Barrier(4)
        procs = [ctx.Process(target=_opener, args=(path, start, w)) for w in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=120)
        assert [p.exitcode for p in procs] == [0] * 4, "a process failed to open a new store (database is locked)"
        assert len(Store(path).arms("suite")) == 4


def test_a_store_is_created_by_its_first_write_and_reads_empty_before(tmp_path):
    store = Store(tmp_path / "sub" / "s.sqlite")
    assert store.evals() == [] and store.arms("a") == [] and store.suites() == []
    assert not store.path.exists()  # a command that only read (or failed) leaves no file
    store.put_eval("k", "a", {"node": "n", "task": "t", "mean": 0.1, "timestamp": 1})
    assert store.path.exists() and store.suites() == ["a"]


def test_a_corrupt_store_names_the_rebuild_and_an_old_store_keeps_its_arms(tmp_path):
    import sqlite3

    import pytest

    from s2d_bench.errors import UserError

    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"SQLite format 3\x00" + b"\x17" * 200)
    with pytest.raises(UserError) as err:
        Store(bad)
    assert str(err.value).endswith("move it aside and run `s2d-bench store rebuild RUN_DIR ...` to make it again from the run directories")
    old = tmp_path / "old.sqlite"  # the arms table as stores wrote it before configs were kept
    with sqlite3.connect(old) as db:
        db.execute("CREATE TABLE arms (suite TEXT NOT NULL, seed INTEGER NOT NULL, arm TEXT NOT NULL, position INTEGER NOT NULL, "
                   "node TEXT NOT NULL, stage TEXT NOT NULL, PRIMARY KEY (suite, seed, arm, position))")
        db.execute("INSERT INTO arms VALUES ('a', 0, 'full', 0, 'n1', 'base')")
    store = Store(old)
    assert [(r["node"], r["config"]) for r in store.arms("a")] == [("n1", "")]
    store.put_arms("a", 0, {"full": [("n2", "base")]}, config="c2", written=5.0)
    assert [r["node"] for r in store.arms("a")] == ["n2"]  # the newest config's arms
    assert sorted(r["node"] for r in store.arms("a", every_config=True)) == ["n1", "n2"]


def test_a_reopened_store_keeps_every_arm_config_and_time_and_its_columns_answer_sql(tmp_path):
    """Users query the file with SQL (`sqlite3 results/s2d-bench.sqlite "select task, mean from evals"`): the columns
    hold the record's fields. Reopening a current store migrates nothing."""
    import sqlite3

    path = tmp_path / "a" / "b" / "s.sqlite"  # folders made by the first write
    Store(path).put_arms("suite", 3, {"full": [("n1", "base"), ("n2", "opd")]}, config="c1", written=7.5)
    record = {"node": "n2", "stage": "opd", "role": "student", "seed": 3, "task": "math500", "mean": 0.25, "stderr": 0.01, "k": 4,
              "n": 500, "timestamp": 9.0}
    Store(path).put_eval("key1", "suite", record)
    again = Store(path)
    assert again.arms("suite") == [{"config": "c1", "seed": 3, "arm": "full", "position": 0, "node": "n1", "stage": "base", "written": 7.5},
                                   {"config": "c1", "seed": 3, "arm": "full", "position": 1, "node": "n2", "stage": "opd", "written": 7.5}]
    with sqlite3.connect(path) as db:
        row = db.execute("SELECT key, suite, node, stage, role, seed, task, mean, stderr, k, n, timestamp FROM evals").fetchone()
    assert row == ("key1", "suite", "n2", "opd", "student", 3, "math500", 0.25, 0.01, 4, 500, 9.0)
    again.put_arms("older", 0, {"full": [("n0", "base")]}, written=1.0)  # no config given: the rows of stores from before configs
    assert again.arms("older")[0]["config"] == ""
    before = time.time()
    again.put_arms("suite", 4, {"full": [("n3", "base")]}, config="c2")  # no time given: now
    assert again.arms("suite")[0]["written"] >= before and again.arms("suite")[0]["config"] == "c2"


def test_evaluations_read_back_oldest_first_by_suite_and_diagnostics_by_node(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    for key, suite, stamp in (("b", "x", 2.0), ("a", "x", 2.0), ("c", "y", 1.0), ("d", "x", 0.5)):
        store.put_eval(key, suite, {"node": key, "mean": 0.5, "timestamp": stamp})
    assert [(r["node"], r["suite"]) for r in store.evals()] == [("d", "x"), ("c", "y"), ("a", "x"), ("b", "x")]  # time, then key
    assert [r["node"] for r in store.evals("x")] == ["d", "a", "b"]
    assert store.suites() == ["x", "y"]
    store.put_diagnostic("x", "n2", "c2", {"kl": 0.5})
    store.put_diagnostic("x", "n1", "c1", {"gain": 0.1})
    store.put_diagnostic("x", "n1", "c1", {"gain": 0.2})  # rewritten: replaced
    assert store.diagnostics("x") == [{"node": "n1", "kind": "c1", "gain": 0.2}, {"node": "n2", "kind": "c2", "kl": 0.5}]
    assert store.diagnostics("y") == []


def test_the_store_path_is_the_one_given_else_the_environment_else_the_default(tmp_path, monkeypatch):
    from pathlib import Path

    from s2d_bench.store import DEFAULT_STORE, resolve_store

    monkeypatch.setenv("S2D_STORE", str(tmp_path / "env.sqlite"))
    assert resolve_store(tmp_path / "given.sqlite") == tmp_path / "given.sqlite"
    assert resolve_store() == tmp_path / "env.sqlite"
    monkeypatch.delenv("S2D_STORE")
    assert resolve_store() == DEFAULT_STORE == Path("results") / "s2d-bench.sqlite"


def test_switching_a_locked_new_file_to_wal_waits_for_the_lock_and_other_errors_surface_at_once(tmp_path):
    """Two processes creating one store: SQLite answers "database is locked" at once to the second journal switch."""
    import sqlite3
    import threading

    import pytest

    path = tmp_path / "s.sqlite"
    holder = sqlite3.connect(path, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    threading.Timer(0.3, holder.rollback).start()
    start = time.perf_counter()
    Store(path)._use_wal()
    assert time.perf_counter() - start >= 0.25
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    holder.close()
    unopenable = Store(tmp_path / "dir.sqlite")  # a folder where the file would be
    unopenable.path.mkdir()
    start = time.perf_counter()
    with pytest.raises(sqlite3.OperationalError, match="unable to open"):
        unopenable._use_wal()
    assert time.perf_counter() - start < 1.0  # not retried


def test_a_store_answered_locked_tries_again_up_to_its_attempts_then_says_so(tmp_path, monkeypatch):
    """The immediate "database is locked" of two processes switching a new file to WAL together is a race no test can
    time; a real SQLite connection that answers the first `locked` journal switches so stands in for the other process."""
    import functools
    import sqlite3

    import pytest

    tries = []

    class Busy(sqlite3.Connection):
        def execute(self, sql, *args):  # noqa: ANN001, ANN202 - sqlite3's own signature
            if sql.startswith("PRAGMA journal_mode"):
                tries.append(sql)
                if len(tries) <= self.locked_answers:
                    raise sqlite3.OperationalError("database is locked")
            return super().execute(sql, *args)

    monkeypatch.setattr(sqlite3, "connect", functools.partial(sqlite3.connect, factory=Busy))
    Busy.locked_answers = 2
    Store(tmp_path / "a.sqlite")._use_wal(attempts=3)  # the third try switches it
    assert len(tries) == 3
    with sqlite3.connect(tmp_path / "a.sqlite") as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    tries.clear()
    Busy.locked_answers = 10
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        Store(tmp_path / "b.sqlite")._use_wal(attempts=3)
    assert len(tries) == 3  # every attempt, then the error
