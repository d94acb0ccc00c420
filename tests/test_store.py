import multiprocessing as mp

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
    with pytest.raises(UserError, match="store rebuild"):
        Store(bad)
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
