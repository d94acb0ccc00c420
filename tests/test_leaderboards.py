import numpy as np
import pytest

from s2d_bench.errors import UserError
from s2d_bench.leaderboards import build, publish, render
from s2d_bench.leaderboards.tables import bootstrap
from s2d_bench.store import Store

PROBLEMS = [f"p{i}" for i in range(40)]


def _record(node: str, stage: str, seed: int, accuracy: list[float], **extra) -> dict:
    per_problem = dict(zip(PROBLEMS, accuracy))
    return {"node": node, "stage": stage, "seed": seed, "task": "add", "metric": "avg@4", "k": 4, "n": len(PROBLEMS),
            "mean": float(np.mean(accuracy)), "stderr": 0.0, "per_problem": per_problem, "timestamp": seed,
            "labeled_draws": 0, "labeled_per_stage": {}, **extra}


def _fill(store: Store) -> None:
    """Two seeds; arm full ends at 0.75 on every problem, arm no-opd at 0.5 on half and 0.25 on the rest."""
    rng = np.random.default_rng(0)
    store.put_eval("base", "s", _record("base", "base", 0, [0.1] * 40))
    for seed in (0, 1):
        store.put_eval(f"t{seed}", "s", _record(f"t{seed}", "teacher_rl", seed, [0.9] * 40, parent="tbase",
                                                 labeled_draws=64, labeled_per_stage={"teacher_rl": 64}))
        store.put_eval(f"f{seed}", "s", _record(f"f{seed}", "student_rl", seed, [0.75] * 40,
                                                 labeled_draws=96, labeled_per_stage={"student_rl": 32, "teacher_rl": 64}))
        store.put_eval(f"n{seed}", "s", _record(f"n{seed}", "student_rl", seed, list(rng.permutation([0.5] * 20 + [0.25] * 20))))
        store.put_eval(f"w{seed}", "s", _record(f"w{seed}", "warmup", seed, [0.5 + 0.25 * seed] * 40))
        store.put_arms("s", seed, {
            "full": [("base", "base"), (f"t{seed}", "teacher_rl"), (f"w{seed}", "warmup"), (f"f{seed}", "student_rl")],
            "no-opd": [("base", "base"), (f"t{seed}", "teacher_rl"), (f"n{seed}", "student_rl")],
        })
        store.put_diagnostic("s", f"w{seed}", "c2", {"stage": "warmup", "kl_forward_before": 2.0, "kl_forward_after": 0.5,
                                                      "kl_reverse_before": 1.0, "kl_reverse_after": 0.25})


def test_bootstrap_interval_brackets_the_mean_and_shrinks_with_more_problems():
    rng = np.random.default_rng(1)
    small, large = rng.random((2, 30)), rng.random((2, 3000))
    a, b = bootstrap(small), bootstrap(large)
    assert a.low < a.mean < a.high and b.low < b.mean < b.high
    assert (b.high - b.low) < (a.high - a.low) / 5
    assert bootstrap(np.full((3, 10), 0.4)).low == pytest.approx(0.4)  # no spread, no interval


def test_leaderboard_pools_seeds_pairs_the_delta_and_keeps_the_budget(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    _fill(store)
    board = build(store, "s")
    rows = board.main.set_index("arm")
    assert list(rows.index) == ["full", "no-opd"]  # full first
    assert rows.loc["full", "add avg@4 [95% CI]"].startswith("0.750 [0.750, 0.750]")
    delta = rows.loc["no-opd", "add Δ vs full"]
    assert delta.startswith("-0.375 [")  # paired: (0.5 + 0.25) / 2 - 0.75
    low, high = map(float, delta.split("[")[1].rstrip("]").split(", "))
    assert -0.45 < low < -0.375 < high < -0.3
    assert rows.loc["full", "labeled draws (per stage)"] == "96 (teacher_rl 64 + student_rl 32)"
    assert rows.loc["full", "add after each stage"] == "base 0.100 → teacher_rl 0.900 → warmup 0.625 → student_rl 0.750"
    c2 = board.c2.iloc[0]
    assert (c2["stage"], c2["arms"], c2["seeds"]) == ("warmup", "full", 2)
    assert c2["KL(T||S) before → after"] == "2.000 → 0.500" and c2["KL(S||T) before → after"] == "1.000 → 0.250"
    assert render(board, "md") == render(build(store, "s"), "md")  # a pure function of the store


def test_the_bootstrap_resamples_problems_so_more_copies_of_the_same_seeds_change_nothing():
    """Cells are (seed, problem); the interval is over problems. Duplicated seeds hold no new problems: a resampling
    of cells would narrow the interval, a resampling of problems leaves it exactly as it was."""
    rng = np.random.default_rng(3)
    matrix = rng.random((2, 50))
    once, twice = bootstrap(matrix), bootstrap(np.vstack([matrix, matrix, matrix]))
    assert (once.mean, once.low, once.high) == pytest.approx((twice.mean, twice.low, twice.high), abs=1e-12)
    assert once.high - once.low > 0.05


def test_the_delta_against_full_is_paired_by_seed_and_problem(tmp_path):
    """An arm that is `full` minus 0.1 on every problem of every seed, where `full` varies from problem to problem:
    its paired delta is exactly -0.1 with no width; an unpaired difference would inherit full's spread."""
    rng = np.random.default_rng(5)
    store = Store(tmp_path / "s.sqlite")
    store.put_eval("base", "s", _record("base", "base", 0, [0.1] * 40))
    for seed in (0, 1):
        full = rng.choice([0.25, 0.5, 0.75, 1.0], size=40)
        store.put_eval(f"f{seed}", "s", _record(f"f{seed}", "student_rl", seed, list(full)))
        store.put_eval(f"d{seed}", "s", _record(f"d{seed}", "student_rl", seed, list(full - 0.1)))
        store.put_arms("s", seed, {"full": [("base", "base"), (f"f{seed}", "student_rl")],
                                   "dropped": [("base", "base"), (f"d{seed}", "student_rl")]})
    rows = build(store, "s").main.set_index("arm")
    assert rows.loc["dropped", "add Δ vs full"] == "-0.100 [-0.100, -0.100]"
    low, high = map(float, rows.loc["full", "add avg@4 [95% CI]"].split("[")[1].rstrip("]").split(", "))
    assert high - low > 0.1  # full itself is spread out


def _ordering_store(tmp_path, direct_gain: float) -> Store:
    """raw-bridge, direct-grpo and bridge over 2 seeds and 40 problems: direct = raw + `direct_gain` (+-0.25 noise),
    bridge = direct + 0.3 everywhere."""
    rng = np.random.default_rng(7)
    store = Store(tmp_path / "o.sqlite")
    store.put_eval("base", "s", _record("base", "base", 0, [0.1] * 40))
    for seed in (0, 1):
        raw = rng.choice([0.0, 0.25, 0.5], size=40)
        direct = np.clip(raw + direct_gain + rng.choice([-0.25, 0.25], size=40), 0, 1)
        values = {"raw-bridge": raw, "direct-grpo": direct, "bridge": np.clip(direct + 0.3, 0, 1)}
        for arm, v in values.items():
            store.put_eval(f"{arm}{seed}", "s", _record(f"{arm}{seed}", "opd", seed, list(v)))
        store.put_arms("s", seed, {arm: [("base", "base"), (f"{arm}{seed}", "opd")] for arm in values})
    return store


def test_the_teacher_quality_ordering_is_a_verdict_on_paired_deltas(tmp_path):
    clear = build(_ordering_store(tmp_path, 0.4), "s").ordering.iloc[0]
    assert clear["raw-teacher transfer < direct GRPO"].startswith("holds: Δ 0.3")  # 0.4, less where clipped at 1
    assert clear["direct GRPO < RL-teacher transfer"].startswith("holds: Δ 0.")
    assert clear["seeds"] == 2 and clear["raw-teacher transfer (raw-bridge)"].startswith("0.2")
    unclear = build(_ordering_store(tmp_path / "u", 0.0), "s").ordering.iloc[0]
    assert unclear["raw-teacher transfer < direct GRPO"].startswith("not resolved")
    reversed_ = build(_ordering_store(tmp_path / "r", -0.4), "s").ordering.iloc[0]
    assert reversed_["raw-teacher transfer < direct GRPO"].startswith("reversed")
    assert "Teacher-quality ordering" in render(build(_ordering_store(tmp_path / "m", 0.4), "s"), "md")


def test_without_all_three_rungs_there_is_no_ordering_section(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    _fill(store)
    board = build(store, "s")
    assert board.ordering.empty and "Teacher-quality ordering" not in render(board, "md")


def test_publish_writes_every_format_and_a_png(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    _fill(store)
    paths = publish(build(store, "s"), tmp_path / "out")
    assert sorted(p.suffix for p in paths) == [".csv", ".html", ".md", ".png", ".tex"]
    assert (tmp_path / "out" / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "\\begin{tabular}" in (tmp_path / "out" / "s.tex").read_text()
    assert "<table" in (tmp_path / "out" / "s.html").read_text()
    assert (tmp_path / "out" / "s.csv").read_text().splitlines()[0].startswith("arm,")


def test_an_eval_suite_is_models_by_benchmarks_and_an_unknown_suite_is_a_clear_error(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    store.put_eval("e1", "evals", {**_record("m", "eval", 0, [1.0] * 40), "model": "tiny-a"})
    store.put_eval("e2", "evals", {**_record("m", "eval", 0, [0.0] * 40), "model": "tiny-b"})
    board = build(store, "evals")
    assert list(board.main["model"]) == ["tiny-a", "tiny-b"]
    with pytest.raises(UserError, match="suites: evals"):
        build(store, "nope")
    with pytest.raises(UserError, match="format"):
        render(board, "pdf")


def test_an_eval_suite_never_pools_two_protocols_into_one_cell(tmp_path):
    """A full evaluation and a later `--limit 1 --samples 4` of the same model: two labelled rows, not one avg@k."""
    store = Store(tmp_path / "s.sqlite")
    full = {**_record("m", "eval", 0, [1.0] * 40), "model": "tiny-a", "eval_config": {"samples": 4, "temperature": 0.7}, "timestamp": 1}
    short = {**full, "k": 2, "n": 1, "per_problem": {"p0": 0.0}, "mean": 0.0, "limit": 1, "eval_config": {"samples": 2, "temperature": 0.7},
             "metric": "avg@2", "timestamp": 2}
    store.put_eval("e1", "evals", full)
    store.put_eval("e2", "evals", short)
    board = build(store, "evals").main
    assert list(board["model"]) == ["tiny-a", "tiny-a"]
    cells = [c for c in board.columns if "[95% CI]" in c]
    values = sorted(v for c in cells for v in board[c] if v != "-")
    assert values == ["0.000 [0.000, 0.000]", "1.000 [1.000, 1.000]"]  # each protocol its own number, none pooled
    assert board["add protocol"].str.contains("limit=1").sum() == 1


def test_the_caption_says_what_the_seeds_varied(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    _fill(store)
    assert "seeds vary every stage; the base models are the same for all" in render(build(store, "s"), "md")
    for key, record in [("f0", _record("f0", "student_rl", 0, [0.75] * 40, seed_scope="all")),
                        ("f1", _record("f1", "student_rl", 1, [0.75] * 40, seed_scope="all"))]:
        store.put_eval(key, "s", record)
    assert "seeds of mixed scope" in render(build(store, "s"), "md")


def test_backend_agreement_pairs_each_backends_arm_with_torchs(tmp_path):
    """The same arms run on torch and on TRL (two configs of one suite): per arm, TRL minus torch over the same seeds
    and problems. An arm whose scores match within noise agrees; one shifted by 0.3 on every problem does not."""
    rng = np.random.default_rng(11)
    store = Store(tmp_path / "s.sqlite")
    store.put_eval("base", "s", _record("base", "base", 0, [0.1] * 40))
    for seed in (0, 1):
        for arm, shift in (("full", 0.0), ("bridge", 0.3)):
            torch_scores = rng.choice([0.5, 0.75], size=40)
            noise = rng.permutation([-0.25] * 13 + [0.25] * 13 + [0.0] * 14) if shift == 0 else 0.0  # mean exactly 0
            for backend, scores in (("torch", torch_scores), ("trl", torch_scores - shift + noise)):
                node = f"{arm}-{backend}{seed}"
                store.put_eval(node, "s", _record(node, "opd", seed, list(scores), backend=backend))
                store.put_arms("s", seed, {arm: [("base", "base"), (node, "opd")]}, config=backend)
    table = build(store, "s").agreement.set_index("arm")
    assert set(table.index) == {"full", "bridge"} and set(table["backend"]) == {"trl"}
    assert table.loc["full", "agrees (interval holds 0)"] == "yes"
    assert table.loc["bridge", "agrees (interval holds 0)"] == "no" and table.loc["bridge", "Δ vs torch [95% CI]"].startswith("-0.3")
    assert "Backend agreement" in render(build(store, "s"), "md")
    one = Store(tmp_path / "one.sqlite")
    _fill(one)
    assert build(one, "s").agreement.empty  # one backend: no section


def test_table_helpers_by_hand():
    """The pieces every table is made of: a record's protocol string, the newest record per node, the arm order and
    the budget column (stages in workflow order, an unknown stage last, a record without draws as 0)."""
    from s2d_bench.leaderboards.tables import _budget, _order, latest_by_node, protocol_of

    record = {"n": 10, "k": 4, "limit": 5, "data": "/x/y/math500.jsonl", "thinking": True, "grader": "math_verify",
              "eval_config": {"temperature": 0.6, "top_p": 0.95, "top_k": 20, "max_new_tokens": 64}}
    assert protocol_of(record) == "n=10 k=4 T=0.6 top-p=0.95 top-k=20 max=64 limit=5 data=math500.jsonl thinking math_verify"
    newer, older = {"node": "a", "task": "t", "timestamp": 2.0, "mean": 1}, {"node": "a", "task": "t", "timestamp": 1.0, "mean": 0}
    assert latest_by_node([newer, older])[("a", "t")] is newer
    assert _order(["b", "a"]) == ["a", "b"] and _order(["b", "full", "a"]) == ["full", "a", "b"]
    assert _budget({"labeled_per_stage": {"custom": 3, "opd": 0, "teacher_rl": 5}}) == "0 (teacher_rl 5 + custom 3)"


def test_the_html_leaderboard_shows_arm_model_and_suite_names_as_text(tmp_path):
    """Names are the user's (config, arm, model): `<script>` or `</td>` in one is text in the page, not markup."""
    from html.parser import HTMLParser

    evil_arm, evil_model, evil_suite = "<script>alert(1)</script>", "m</td><td>x", "s<img src=x onerror=alert(1)>"
    store = Store(tmp_path / "s.sqlite")
    store.put_eval("base", evil_suite, _record("base", "base", 0, [0.1] * 40))
    store.put_eval("f0", evil_suite, _record("f0", "student_rl", 0, [0.75] * 40))
    store.put_arms(evil_suite, 0, {evil_arm: [("base", "base"), ("f0", "student_rl")], "full": [("base", "base"), ("f0", "student_rl")]})
    store.put_eval("e1", "evals", {**_record("m", "eval", 0, [1.0] * 40), "model": evil_model})

    class Tags(HTMLParser):
        def __init__(self):
            super().__init__()
            self.tags, self.cells, self.text = [], [], ""

        def handle_starttag(self, tag, attrs):
            self.tags.append(tag)
            if tag == "td":
                self.cells.append("")

        def handle_data(self, data):
            self.text += data
            if self.cells:
                self.cells[-1] += data

    for suite, name in ((evil_suite, evil_arm), ("evals", evil_model)):
        page = Tags()
        page.feed(render(build(store, suite), "html"))
        assert "script" not in page.tags and "img" not in page.tags
        assert name in [c.strip() for c in page.cells]
        assert suite in page.text


def test_a_hub_folder_loads_back_with_datasets_and_reproduces_the_leaderboard(tmp_path):
    import datasets
    import yaml
    from click.testing import CliRunner

    from s2d_bench.cli import main
    from s2d_bench.leaderboards.hub import TABLES, store_from_tables

    store = Store(tmp_path / "s.sqlite")
    _fill(store)
    out = CliRunner().invoke(main, ["leaderboard", "--suite", "s", "--store", str(tmp_path / "s.sqlite"), "publish",
                                    "--hub-dir", str(tmp_path / "hub")])
    assert out.exit_code == 0, out.output
    hub = tmp_path / "hub"
    loaded = {name: datasets.load_dataset("parquet", data_files=str(hub / "data" / f"{name}.parquet"), split="train",
                                          cache_dir=str(tmp_path / "cache")) for name in TABLES}
    again = store_from_tables(loaded["records"], loaded["arms"], loaded["diagnostics"], tmp_path / "again.sqlite")
    original, rebuilt = build(store, "s"), build(again, "s")
    assert rebuilt.main.equals(original.main) and rebuilt.c2.equals(original.c2)
    assert render(rebuilt) == render(original)
    assert loaded["leaderboard"].to_pandas().equals(original.main.astype(str))
    scores = loaded["per_problem"].to_pandas()
    assert len(scores) == len(store.evals("s")) * len(PROBLEMS)
    means = scores.groupby("node")["score"].mean()
    assert all(means[r["node"]] == pytest.approx(r["mean"]) for r in store.evals("s"))
    text = (hub / "README.md").read_text()
    meta = yaml.safe_load(text.split("---\n")[1])
    assert [c["config_name"] for c in meta["configs"]] == list(TABLES)
    assert all((hub / f["path"]).is_file() for c in meta["configs"] for f in c["data_files"])
    assert meta["s2d_bench"]["seeds"] == [0, 1] and meta["s2d_bench"]["tasks"] == ["add"]
    assert (hub / "tables" / "s.md").read_text().strip() in text  # the card shows the published table
