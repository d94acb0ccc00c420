from pathlib import Path
import numpy as np
import pytest

from s2d_bench.errors import UserError
from s2d_bench.leaderboards import build, publish, render
from s2d_bench.leaderboards.intervals import interval
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


def test_the_interval_brackets_the_mean_and_shrinks_with_more_problems():
    rng = np.random.default_rng(1)
    small, large = rng.random((1, 30)), rng.random((1, 3000))
    a, b = interval(small), interval(large)
    assert a.low < a.mean < a.high and b.low < b.mean < b.high
    assert (b.high - b.low) < (a.high - a.low) / 5
    assert interval(np.full((3, 10), 0.4)).low == pytest.approx(0.4)  # no spread, no interval


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


def test_seeds_that_disagree_widen_the_interval_that_problems_alone_would_give():
    """Cells are (seed, problem). Two seeds that shift every problem by +-0.05 are seed noise: the interval over seeds
    and problems must hold it, where one over problems alone (the seeds' per-problem means) is blind to it."""
    rng = np.random.default_rng(3)
    problems = rng.random(200)
    matrix = np.vstack([problems + 0.05, problems - 0.05, problems + 0.05, problems - 0.05])
    over_both, problems_only = interval(matrix), interval(matrix.mean(axis=0, keepdims=True))
    assert over_both.mean == pytest.approx(problems_only.mean)
    assert over_both.high - over_both.low > 1.5 * (problems_only.high - problems_only.low)
    assert over_both.seed_sd == pytest.approx(0.0577, abs=1e-3)


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


def _ordering_store(tmp_path, direct_gain: float, seeds: tuple[int, ...] = (0, 1, 2)) -> Store:
    """raw-bridge, direct-grpo and bridge over 3 seeds and 40 problems: direct = raw + `direct_gain` (+-0.25 noise),
    bridge = direct + 0.3 everywhere."""
    rng = np.random.default_rng(7)
    store = Store(tmp_path / "o.sqlite")
    store.put_eval("base", "s", _record("base", "base", 0, [0.1] * 40))
    for seed in seeds:
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
    assert clear["seeds"] == 3 and clear["raw-teacher transfer (raw-bridge)"].startswith("0.2")
    unclear = build(_ordering_store(tmp_path / "u", 0.0), "s").ordering.iloc[0]
    assert unclear["raw-teacher transfer < direct GRPO"].startswith("not resolved")
    assert "; seed SD " in unclear["raw-teacher transfer < direct GRPO"] and "seeds" in unclear["raw-teacher transfer < direct GRPO"].split("; ")[-1]
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
    assert sorted(p.suffix for p in paths) == [".csv", ".html", ".md", ".png", ".png", ".tex"]
    assert (tmp_path / "out" / "s-ablation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "out" / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "\\begin{tabular}" in (tmp_path / "out" / "s.tex").read_text()
    page = (tmp_path / "out" / "s.html").read_text()  # a page that stands alone: head, style, the caption, a heading a section
    assert page.startswith("<!doctype html>") and "<style>" in page and "border-collapse" in page and "text-align: left" in page
    assert '<h1>s leaderboard</h1>' in page and '<p class="caption">95% intervals over seeds and problems' in page
    assert page.count("<table") == len(build(store, "s").sections()) == page.count("<h2>") + 1
    assert '<img src="s.png"' in page and '<img src="s-ablation.png"' in page  # the figures published beside it
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
    assert values == ["0.000 [0.000, 1.000]", "1.000 [1.000, 1.000]"]  # each protocol its own number, none pooled
    # (one score of one problem: nothing is known of its spread, so its interval is the whole range)
    assert board["add protocol"].str.contains("limit=1").sum() == 1


def test_the_caption_says_what_the_seeds_varied(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    _fill(store)
    assert "seeds vary every stage; the base models are the same for all" in render(build(store, "s"), "md")
    for key, record in [("f0", _record("f0", "student_rl", 0, [0.75] * 40, seed_scope="all")),
                        ("f1", _record("f1", "student_rl", 1, [0.75] * 40, seed_scope="all"))]:
        store.put_eval(key, "s", record)
    assert "seeds of mixed scope" in render(build(store, "s"), "md")
    assert "## s (95% intervals over seeds and problems; seeds" in render(build(store, "s"), "md")


def test_every_markdown_row_of_a_multi_seed_board_has_as_many_cells_as_its_header(tmp_path):
    """Seed notes, verdicts and the C2 header `KL(T||S)` go into table cells: a bare '|' inside one would split the
    row (GitHub renders the table as text), so the Markdown escapes it."""
    full_board = Store(tmp_path / "s.sqlite")
    _fill(full_board)
    boards = [render(build(_ordering_store(tmp_path, 0.0), "s"), "md"), render(build(full_board, "s"), "md")]
    published = Path(__file__).parents[2] / "leaderboards" / "tiny.md"
    for text in [*boards, published.read_text(encoding="utf-8")]:
        tables = _markdown_tables(text)
        assert len(tables) == text.count("## "), text  # every section rendered as a table, none fell apart into text
        for header, rows in tables:
            assert rows and all(len(row) == len(header) for row in rows), (header, rows)
    c2 = [header for header, _ in _markdown_tables(boards[1]) if "KL(T||S) before → after" in header]
    assert c2, "the C2 header reads KL(T||S) once rendered"


def _markdown_tables(text: str) -> list[tuple[list[str], list[list[str]]]]:
    """(header cells, body rows' cells) of every table a CommonMark renderer with GitHub's tables extension finds."""
    from markdown_it import MarkdownIt

    tables, cells, header, rows, where = [], [], [], [], None
    for token in MarkdownIt("commonmark").enable("table").parse(text):
        if token.type in ("thead_open", "tbody_open"):
            where = token.type[:5]
        elif token.type == "tr_open":
            cells = []
        elif token.type == "inline" and where:
            cells.append(token.content)
        elif token.type == "tr_close":
            (header.extend if where == "thead" else rows.append)(cells)
        elif token.type == "table_close":
            tables.append((header, rows))
            header, rows, where = [], [], None
    return tables


def test_a_one_seed_board_says_its_intervals_cover_problems_only_in_the_caption_and_every_verdict(tmp_path):
    store = _ordering_store(tmp_path, 0.4, seeds=(0,))
    board = build(store, "s")
    text = render(board, "md")
    assert "## s (one seed: 95% intervals cover problem sampling only, not training-seed noise)" in text
    assert all("(one seed: problems only)" in board.ordering.iloc[0][c] for c in board.ordering.columns if " < " in c)


def test_a_delta_pairs_problems_by_id_and_refuses_two_different_problem_sets_of_any_size():
    """The old pairing sorted ids and compared only shapes: two different 3-problem sets were paired by position."""
    from s2d_bench.leaderboards.tables import _paired_delta

    def rec(scores: dict) -> dict:
        return {"per_problem": scores}

    mine = {0: rec({"a": 1.0, "b": 0.0, "c": 0.5}), 1: rec({"c": 0.5, "a": 1.0, "b": 0.0})}
    same_ids = {0: rec({"c": 0.25, "b": 0.0, "a": 0.75}), 1: rec({"b": 0.0, "c": 0.25, "a": 0.75})}
    other_ids = {0: rec({"x": 1.0, "y": 0.0, "z": 0.5}), 1: rec({"x": 1.0, "y": 0.0, "z": 0.5})}
    delta = _paired_delta(mine, same_ids, [0, 1])
    assert (delta.mean, delta.low, delta.high) == pytest.approx((1 / 6, 1 / 6 - delta.half_width, 1 / 6 + delta.half_width))
    assert str(delta).startswith("0.167 [")  # a: +0.25, b: 0, c: +0.25, paired by id whatever the order
    assert _paired_delta(mine, other_ids, [0, 1]) is None
    assert _paired_delta(mine, {0: rec({"a": 1.0, "b": 0.0}), 1: rec({"a": 1.0, "b": 0.0})}, [0, 1]) is None


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


# ---------------------------------------------------------------- the tables' functions on hand-made rows
def _path(arm: str, seed: int, nodes: list[tuple[str, str]], config: str = "") -> list[dict]:
    return [{"arm": arm, "seed": seed, "position": i, "node": n, "stage": s, "config": config} for i, (n, s) in enumerate(nodes)]


def _one_off(value: float, where: int = 0) -> list[float]:
    """0.5 on every problem but one, which gets `value`: a paired delta whose 2.5% or 97.5% bound is exactly 0 (most
    resamples miss that problem)."""
    scores = [0.5] * len(PROBLEMS)
    scores[where] = value
    return scores


def test_pinned_intervals_so_published_tables_reproduce():
    """Pinned numbers: a leaderboard rebuilt from the store must print what was published."""
    matrix = np.array([[1.0, 0.0] * 20, [0.5, 0.0] * 20])
    assert str(interval(matrix)) == "0.375 [-1.000, 1.000]"  # two seeds 0.25 apart: t with 1 degree of freedom, clipped
    spread = np.random.default_rng(7).random((3, 50)).round(3)
    assert str(interval(spread)) == "0.509 [0.396, 0.623]"
    assert str(interval(spread[:1])) == "0.495 [0.411, 0.578]"


def test_verdicts_and_agreement_at_the_edges_of_the_interval():
    """An interval that touches 0 contains it for the agreement test; a one-seed agreement says it covers problems
    only."""
    from s2d_bench.leaderboards.intervals import Interval
    from s2d_bench.leaderboards.tables import _agrees, agreement_table

    assert _agrees(Interval(0.1, 0.0, 0.2, 3)) == "yes" and _agrees(Interval(-0.1, -0.2, 0.0, 3)) == "yes"
    assert _agrees(Interval(0.1, 0.01, 0.2, 3)) == "no" and _agrees(Interval(-0.1, -0.2, -0.01, 3)) == "no"
    for value in (0.75, 0.25):  # trl above torch on one problem, or below: within problem noise
        evals = [_record("t0", "opd", 0, [0.5] * 40, backend="torch"), _record("r0", "opd", 0, _one_off(value), backend="trl")]
        arms = _path("full", 0, [("t0", "opd")], "torch") + _path("full", 0, [("r0", "opd")], "trl")
        row = agreement_table(evals, arms).iloc[0]
        assert row["agrees (interval holds 0)"] == "yes (one seed: problems only)"
        assert row["Δ seeds"] == "one seed: seed noise not covered"


def test_agreement_pairs_only_seeds_both_backends_ran_and_each_column_holds_its_number():
    from s2d_bench.leaderboards.tables import agreement_table

    evals, arms = [], []
    for seed in (0, 1, 2):
        evals.append(_record(f"t{seed}", "opd", seed, [0.5] * 40, backend="torch"))
        arms += _path("full", seed, [("base", "base"), (f"m{seed}", "warmup"), (f"t{seed}", "opd")], "torch")
    for seed in (0, 1):  # trl ran two of the three seeds
        evals.append(_record(f"r{seed}", "opd", seed, [0.75] * 40, backend="trl"))
        arms += _path("full", seed, [("base", "base"), (f"n{seed}", "warmup"), (f"r{seed}", "opd")], "trl")
    table = agreement_table(evals, arms)
    assert list(table.columns) == ["arm", "task", "backend", "seeds", "avg@k [95% CI]", "torch avg@k [95% CI]",
                                   "Δ vs torch [95% CI]", "agrees (interval holds 0)", "Δ seeds"]
    assert table.iloc[0].tolist() == ["full", "add", "trl", 2, "0.750 [0.750, 0.750]", "0.500 [0.500, 0.500]",
                                      "0.250 [0.250, 0.250]", "no", "seed SD 0.000"]


def test_agreement_skips_a_task_without_common_seeds_or_problems_and_goes_on_to_the_next():
    from s2d_bench.leaderboards.tables import agreement_table

    evals = [_record("t0", "opd", 0, [0.5] * 40, backend="torch"), _record("r1", "opd", 1, [0.5] * 40, backend="trl"),
             _record("t0", "opd", 0, [0.5] * 40, backend="torch", task="b"), _record("r1", "opd", 1, [0.5] * 40, backend="trl", task="b")]
    arms = _path("full", 0, [("t0", "opd")], "torch") + _path("full", 1, [("r1", "opd")], "trl")
    assert agreement_table(evals, arms).empty  # no seed in common on either task
    short = {**_record("r0", "opd", 0, [0.5] * 10, backend="trl"), "per_problem": {f"q{i}": 0.5 for i in range(10)}}
    evals = [_record("t0", "opd", 0, [0.5] * 40, backend="torch"), short,
             _record("t0", "opd", 0, [0.5] * 40, backend="torch", task="b"), _record("r0", "opd", 0, [0.5] * 40, backend="trl", task="b")]
    arms = _path("full", 0, [("t0", "opd")], "torch") + _path("full", 0, [("r0", "opd")], "trl")
    table = agreement_table(evals, arms)
    assert list(table["task"]) == ["b"]  # 'add' has no problem in common: skipped, 'b' still paired


def test_agreement_leaves_out_records_that_do_not_say_their_backend():
    """Records from before the backend was stored cannot be paired by backend."""
    from s2d_bench.leaderboards.tables import agreement_table

    evals = [_record("t0", "opd", 0, [0.5] * 40, backend="torch"), _record("o0", "opd", 0, [0.75] * 40)]
    arms = _path("full", 0, [("t0", "opd")], "torch") + _path("full", 0, [("o0", "opd")], "old")
    assert agreement_table(evals, arms).empty


def test_the_ordering_table_names_its_columns_and_marks_unpaired_problem_sets():
    from s2d_bench.leaderboards.tables import ordering_table

    evals, arms = [], []
    for arm, scores in (("raw-bridge", [0.25] * 40), ("direct-grpo", [0.5] * 40), ("no-student-rl", [0.75] * 10)):
        record = _record(arm, "opd", 0, scores)
        if arm == "no-student-rl":
            record["per_problem"] = dict(zip(PROBLEMS[:10], scores))
        evals.append(record)
        arms += _path(arm, 0, [(arm, "opd")])
    row = ordering_table(evals, arms).iloc[0]
    assert list(row.index) == ["task", "seeds", "raw-teacher transfer (raw-bridge)", "direct GRPO (direct-grpo)",
                               "RL-teacher transfer (no-student-rl)", "raw-teacher transfer < direct GRPO",
                               "direct GRPO < RL-teacher transfer"]
    assert row["task"] == "add" and row["seeds"] == 1
    assert row["raw-teacher transfer < direct GRPO"] == "holds (one seed: problems only): Δ 0.250 [0.250, 0.250]"
    assert row["direct GRPO < RL-teacher transfer"] == "-"  # 40 problems against 10: no paired delta


def test_the_arm_table_pairs_per_task_and_goes_on_past_a_task_an_arm_lacks():
    """Arm `a` has no record on task 'add' at its final node but has one on 'b'; `full` is on 40 problems and `c` on 10
    (no paired delta: '-'); a record without draws says so."""
    from s2d_bench.leaderboards.tables import arm_table

    evals = [_record("f", "opd", 0, [0.5] * 40), _record("f", "opd", 0, [0.5] * 40, task="b"),
             _record("a", "opd", 0, [0.75] * 40, task="b"),
             {**_record("c", "opd", 0, [0.25] * 10), "per_problem": dict(zip(PROBLEMS[:10], [0.25] * 10))}]
    arms = _path("full", 0, [("f", "opd")]) + _path("a", 0, [("a", "opd")]) + _path("c", 0, [("c", "opd")])
    table = arm_table(evals, arms).set_index("arm")
    assert list(table.columns) == ["add avg@4 [95% CI]", "add Δ vs full", "add Δ seeds", "b avg@4 [95% CI]", "b Δ vs full", "b Δ seeds", "seeds",
                                   "labeled draws (per stage)", "add after each stage", "b after each stage"]
    assert table.loc["a", "add avg@4 [95% CI]"] == "-" and table.loc["a", "b Δ vs full"] == "0.250 [0.250, 0.250]"
    assert table.loc["c", "add Δ vs full"] == "-" and table.loc["full", "add Δ vs full"] == "-"
    assert table.loc["c", "add Δ seeds"] == "-" and table.loc["a", "b Δ seeds"] == "one seed: seed noise not covered"
    assert table.loc["a", "seeds"] == 1 and table.loc["a", "labeled draws (per stage)"] == "0 (none)"
    assert table.loc["a", "b after each stage"] == "opd 0.750"
    from s2d_bench.leaderboards.tables import ablation_frame

    assert ablation_frame(evals, arms, "add")["arm"].tolist() == ["full", "c"]  # past `a`, which has no record on add


def test_the_trajectory_has_its_columns_even_when_empty():
    from s2d_bench.leaderboards.tables import trajectory

    evals = [_record("b", "base", 0, [0.25] * 40), _record("s0", "opd", 0, [0.5] * 40), _record("s1", "opd", 1, [1.0] * 40)]
    arms = _path("full", 0, [("b", "base"), ("s0", "opd")]) + _path("full", 1, [("b", "base"), ("s1", "opd")])
    frame = trajectory(evals, arms, "add")
    assert frame.to_dict("records") == [{"arm": "full", "position": 0, "stage": "base", "mean": 0.25, "seeds": 2},
                                        {"arm": "full", "position": 1, "stage": "opd", "mean": 0.75, "seeds": 2}]
    empty = trajectory(evals, arms, "unknown task")
    assert empty.empty and list(empty.columns) == ["arm", "position", "stage", "mean", "seeds"]


def test_a_record_without_a_timestamp_counts_as_the_oldest():
    """Records from before timestamps were kept: any timestamped record of the same node is newer."""
    from s2d_bench.leaderboards.tables import latest_by_node, model_table

    old, new = _record("n", "opd", 0, [0.0] * 40), _record("n", "opd", 0, [1.0] * 40)
    del old["timestamp"]
    new["timestamp"] = 0.5
    assert latest_by_node([new, old])[("n", "add")] is new
    assert latest_by_node([old, new])[("n", "add")] is new
    table = model_table([{**new, "model": "m"}, {**old, "model": "m", "k": 2}])  # two protocols, in the order first run
    assert table["add avg@4 [95% CI]"].tolist() == ["0.000 [0.000, 0.000]", "1.000 [1.000, 1.000]"]


def test_a_protocol_column_appears_only_when_a_model_has_two_protocols_and_rows_fill_per_benchmark():
    from s2d_bench.leaderboards.tables import model_table, protocol_of

    one = {**_record("e", "eval", 0, [1.0] * 40), "model": "m", "grader": "exact"}
    assert "add protocol" not in model_table([one]).columns
    assert protocol_of({"n": 1, "k": 1}) == "n=1 k=1 ?"  # a record that does not name its grader
    a2 = {**one, "task": "a", "timestamp": 1}
    b1, b2 = {**one, "task": "b", "k": 2, "timestamp": 2}, {**one, "task": "b", "k": 3, "timestamp": 3, "per_problem": {"p0": 0.0}}
    table = model_table([a2, b1, b2])
    assert list(table["a protocol"]) == [protocol_of(a2), "-"]  # a has one protocol: its second row is empty there
    assert list(table["b protocol"]) == [protocol_of(b1), protocol_of(b2)]
    assert table["b avg@4 [95% CI]"].tolist()[1] == "0.000 [0.000, 1.000]"  # one score: nothing known of its spread


def test_a_grid_and_its_backend_swap_are_one_table_with_a_backend_column_and_an_ordering_each(tmp_path):
    """The torch grid and the same grid on TRL (two configs, each its own backend) in one suite: every arm once per
    backend, torch's first, a `backend` column, and the teacher-quality ordering of each backend's grid."""
    store = Store(tmp_path / "s.sqlite")
    store.put_eval("base", "s", _record("base", "base", 0, [0.1] * 40))
    for backend, lift in (("torch", 0.0), ("trl", 0.25)):
        for arm, score in (("raw-bridge", 0.0), ("direct-grpo", 0.25), ("no-student-rl", 0.5), ("full", 0.5)):
            node = f"{arm}-{backend}"
            store.put_eval(node, "s", _record(node, "opd", 0, [score + lift] * 40, backend=backend))
            store.put_arms("s", 0, {arm: [("base", "base"), (node, "opd")]}, config=f"cfg-{backend}",
                           written=1.0 if backend == "torch" else 2.0)
    board = build(store, "s", every_config=True)
    assert list(board.main.columns[:2]) == ["arm", "backend"]
    assert board.main[["arm", "backend"]].values.tolist()[:4] == [["full [torch]", "torch"], ["full [trl]", "trl"],
                                                                   ["direct-grpo [torch]", "torch"], ["direct-grpo [trl]", "trl"]]
    deltas = board.main.set_index("arm")["add Δ vs full"]  # each against the full arm of its own backend
    assert deltas["direct-grpo [trl]"] == deltas["direct-grpo [torch]"] == "-0.250 [-0.250, -0.250]"
    assert sorted(board.main["backend"]) == ["torch"] * 4 + ["trl"] * 4
    assert board.ordering["backend"].tolist() == ["torch", "trl"]
    assert all(board.ordering["raw-teacher transfer < direct GRPO"].str.startswith("holds (one seed: problems only): Δ 0.250"))
    newest = build(store, "s")  # without every_config: the config run last alone, as before
    assert "backend" not in newest.main.columns and set(newest.main["arm"]) == {"full", "direct-grpo", "no-student-rl", "raw-bridge"}


def test_the_ordering_and_the_agreement_go_on_past_a_task_without_common_seeds():
    """Task 'a' is on different seeds for each arm (nothing to pair); task 'b' pairs: its row must still be there."""
    from s2d_bench.leaderboards.tables import agreement_table, ordering_table

    evals, arms = [], []
    for arm, score in (("raw-bridge", 0.25), ("direct-grpo", 0.5), ("no-student-rl", 0.75)):
        for seed in (0, 1):
            node = f"{arm}{seed}"
            evals.append(_record(node, "opd", seed, [score] * 40, task="b"))
            if seed == (arm == "direct-grpo"):  # on 'a' each arm has one seed, not all the same
                evals.append(_record(node, "opd", seed, [score] * 40, task="a"))
            arms += _path(arm, seed, [(node, "opd")])
    assert list(ordering_table(evals, arms)["task"]) == ["b"]
    evals = [_record("t0", "opd", 0, [0.5] * 40, backend="torch", task="a"), _record("r1", "opd", 1, [0.5] * 40, backend="trl", task="a"),
             _record("t0", "opd", 0, [0.5] * 40, backend="torch", task="b"), _record("r0", "opd", 0, [0.5] * 40, backend="trl", task="b")]
    arms = (_path("full", 0, [("t0", "opd")], "torch") + _path("full", 1, [("r1", "opd")], "trl")
            + _path("full", 0, [("r0", "opd")], "trl"))
    assert list(agreement_table(evals, arms)["task"]) == ["b"]


def test_the_stage_plot_keeps_the_teacher_off_the_students_lines(tmp_path):
    """full runs base student -> teacher RL (the teacher's score) -> warmup: the student's line joins base and warmup,
    and the teacher's 0.9 is a separate point, never a vertex of the line."""
    from s2d_bench.leaderboards.plot import plot_trajectories

    store = Store(tmp_path / "s.sqlite")
    _fill(store)
    board = build(store, "s")
    ax = plot_trajectories(board.trajectories, "s", tmp_path / "s.png").axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines["full"].get_ydata()) == pytest.approx([0.1, 0.625, 0.75])  # base, warmup, student RL
    assert 0.9 not in list(lines["no-opd"].get_ydata())
    teacher_points = [tuple(p) for c in ax.collections for p in c.get_offsets()]
    assert (1.0, 0.9) in teacher_points  # the teacher after stage 1, at its own x


def test_the_ablation_figure_has_a_row_per_arm_with_its_score_and_delta_intervals(tmp_path):
    from s2d_bench.leaderboards.plot import plot_ablation

    store = Store(tmp_path / "s.sqlite")
    _fill(store)
    frame = build(store, "s").ablations["add"]
    assert frame["arm"].tolist() == ["full", "no-opd"] and frame["seeds"].tolist() == [2, 2]
    assert frame.loc[1, "delta"] == pytest.approx(-0.375) and frame.loc[1, "delta_low"] < -0.375 < frame.loc[1, "delta_high"]
    assert np.isnan(frame.loc[0, "delta"]) and frame.loc[0, ["mean", "low", "high"]].tolist() == pytest.approx([0.75] * 3)
    left, right = plot_ablation({"add": frame}, "s", tmp_path / "a.png").axes
    assert [t.get_text() for t in left.get_yticklabels()] == ["full (2 seeds)", "no-opd (2 seeds)"]
    assert [t.get_text() for t in right.get_yticklabels()] == ["", ""]  # the same rows, named once
    assert len(left.containers) == 2 and len(right.containers) == 1  # full has no delta against itself
    (x,), (y,) = right.containers[0].lines[0].get_data()
    assert (x, y) == pytest.approx((-0.375, 1.0))


def test_a_grid_still_running_shows_its_pending_arms_as_gaps_and_seed_counts_as_integers(tmp_path):
    """`store rebuild` of a run directory mid-grid (or a leaderboard read while it runs) has arms whose nodes have no
    records yet: they show '-', the caption still counts the seeds of the others (this was a TypeError traceback)."""
    store = Store(tmp_path / "s.sqlite")
    _fill(store)
    store.put_arms("s", 0, {"pending": [("base", "base"), ("not-built-yet", "opd")]})
    board = build(store, "s")
    rows = board.main.set_index("arm")
    assert rows.loc["pending", "seeds"] == "-" and rows.loc["full", "seeds"] == 2 and isinstance(rows.loc["full", "seeds"], int)
    assert board.scope.startswith("95% intervals over seeds and problems")


def test_a_benchmark_group_gets_its_macro_average_once_every_member_is_evaluated():
    from s2d_bench.leaderboards.intervals import pooled
    from s2d_bench.leaderboards.tables import model_table
    from s2d_bench.tasks.benchmarks import GROUPS

    members = GROUPS["math-rl"]
    rows = [{**_record("e", "eval", 0, [i / 10] * 20 + [1.0] * 20), "model": "m", "task": name} for i, name in enumerate(members)]
    column = f"math-rl (mean of {len(members)}) [95% CI]"
    table = model_table(rows)
    expected = pooled([np.array([[i / 10] * 20 + [1.0] * 20]) for i in range(len(members))])
    assert table[column].tolist() == [str(expected)] and expected.mean == pytest.approx(np.mean([(i / 10 + 1) / 2 for i in range(9)]))
    assert column not in model_table(rows[:-1]).columns  # one member missing: no average that reads as the group's


def test_an_arm_on_a_served_teacher_says_so_with_each_distillation_stages_estimator(tmp_path):
    """A row whose records name a served teacher gets a teacher column: the served name and, per distillation stage, the
    estimator (with k for top-k, whose value depends on it); arms on a resident teacher get none; C2 rows of a served
    teacher are labelled estimates."""
    store = Store(tmp_path / "s.sqlite")
    served = {"teacher_model": "big (served)"}
    store.put_eval("base", "s", _record("base", "base", 0, [0.1] * 40, **served))
    store.put_eval("w", "s", _record("w", "warmup", 0, [0.3] * 40, node_config={"estimator": "topk", "top_k": 16}, **served))
    store.put_eval("o", "s", _record("o", "opd", 0, [0.4] * 40, node_config={"estimator": "sampled", "top_k": 8}, **served))
    store.put_eval("r", "s", _record("r", "student_rl", 0, [0.5] * 40, node_config={"steps": 2}, **served))
    store.put_eval("d", "s", _record("d", "student_rl", 0, [0.2] * 40, node_config={"steps": 9}, **served))
    store.put_arms("s", 0, {"full": [("base", "base"), ("w", "warmup"), ("o", "opd"), ("r", "student_rl")],
                            "warm": [("base", "base"), ("w", "warmup")], "direct-grpo": [("base", "base"), ("d", "student_rl")]})
    store.put_diagnostic("s", "o", "c2", {"stage": "opd", "teacher": "served", "top_k": 8, "kl_forward_before": 2.0,
                                          "kl_forward_after": 0.5, "kl_reverse_before": 1.0, "kl_reverse_after": 0.25})
    board = build(store, "s")
    rows = board.main.set_index("arm")
    assert rows.loc["full", "teacher"] == "big (served): warmup topk k=16, opd sampled"
    assert rows.loc["warm", "teacher"] == "big (served): warmup topk k=16"
    assert rows.loc["direct-grpo", "teacher"] == "-"  # never asked the teacher
    assert list(board.c2["stage"]) == ["opd (served teacher: sampled-token estimate, top-k 8)"]
    local = Store(tmp_path / "l.sqlite")
    _fill(local)
    assert "teacher" not in build(local, "s").main.columns
