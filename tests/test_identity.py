"""What makes two nodes, configs and evaluations the same (identity.py): every hash pinned to the value the code before
the move to identity.py computed (so existing run directories and stores stay valid), and what each hash leaves out."""

import dataclasses

import pytest

from s2d_bench.config import load_config
from s2d_bench.harness.records import EvalRecord
from s2d_bench.identity import config_hash, eval_file_hash, eval_key, node_seed, record_evaluation_id, run_hash, stage_inputs, without
from s2d_bench.pipeline import Runner

RECORD = EvalRecord(model="m", task="math500", benchmark="math500", eval_config={"samples": 4}, engine="hf", thinking=False, grader="g",
                    audit_grader=None, seed=0, eval_seed=1234, data="d", limit=None, metric="avg", n=1, k=1, mean=0.5, stderr=0.1,
                    pass_at={}, maj=0.0, agreement=None, timeouts=0, no_answer=0.0, samples_per_second=1.0, tokens_per_second=1.0,
                    eval_seconds=1.0, breakdown=[], per_problem={})


@pytest.mark.parametrize("overrides, evals, run", [([], ["800a66511374"], "df388bacae8f"),
                                                   (["prompt.thinking=true"], ["a1839f6397ae"], "d9aa85622fe1")], ids=["tiny", "thinking"])
def test_evaluation_file_names_and_config_ids_are_the_ones_earlier_runs_wrote(tmp_path, overrides, evals, run):
    cfg = load_config(None, [f"run_dir={tmp_path}", *overrides])
    assert [eval_file_hash(cfg, t) for t in Runner(cfg).targets] == evals
    assert run_hash(cfg) == run


def test_a_config_id_leaves_out_where_and_how_it_runs_and_its_arms_but_nothing_it_computes(tmp_path):
    cfg = load_config(None, [])
    same = ["seed=3", "jobs=2", "threads=2", f"run_dir={tmp_path}", f"store={tmp_path / 's.sqlite'}", "arms={x: {stages: [warmup]}}",
            "seed_scope=stages"]
    for override in same:
        assert run_hash(load_config(None, [override])) == run_hash(cfg), override
    for override in ["stages.opd.lr=0.5", "seed_scope=all", "backend=trl", "eval.samples=3", "prompt.thinking=true"]:
        assert run_hash(load_config(None, [override])) != run_hash(cfg), override


def test_store_keys_end_in_the_evaluation_id_and_follow_the_protocol():
    assert eval_key(RECORD) == f"eval:m:math500:{record_evaluation_id(RECORD)}"
    assert eval_key(dataclasses.replace(RECORD, node="opd-123"), "abc") == "opd-123:math500:abc"  # a run's: its file's id
    for change in [{"eval_config": {"samples": 8}}, {"engine": "vllm"}, {"eval_seed": 1}, {"limit": 5}, {"data": "e"}, {"thinking": True},
                   {"benchmark": "aime24"}, {"model": "n"}, {"node": "opd-1"}]:
        assert eval_key(dataclasses.replace(RECORD, **change)) != eval_key(RECORD), change
    for change in [{"mean": 0.9}, {"seed": 7}, {"grader": "other"}, {"task": "x"}]:  # numbers, the run's seed: the same evaluation
        assert eval_key(dataclasses.replace(RECORD, **change)) == eval_key(RECORD), change


def test_the_keys_earlier_stores_hold_are_known_so_a_row_put_again_replaces_its_old_row(tmp_path):
    from s2d_bench.identity import eval_keys, legacy_eval_key, put_record
    from s2d_bench.store import Store

    assert legacy_eval_key(RECORD) == "eval:m:math500:63c08dbbe694"  # what stores before the one identity hold
    assert legacy_eval_key(dataclasses.replace(RECORD, node="opd-123", thinking=True)) == "opd-123:math500:546139b474af"
    store = Store(tmp_path / "s.sqlite")
    other = dataclasses.replace(RECORD, benchmark="aime24", task="aime24")
    for record in (RECORD, other):
        store.put_eval(legacy_eval_key(record), "eval", record.to_dict())  # an old store: two rows
    key, legacy = eval_keys(dataclasses.replace(RECORD, mean=0.9).to_dict())
    assert (key, legacy) == (eval_key(RECORD), legacy_eval_key(RECORD)) and key != legacy
    put_record(store, "eval", dataclasses.replace(RECORD, mean=0.9).to_dict())
    assert sorted((r["benchmark"], r["mean"]) for r in store.evals()) == [("aime24", 0.5), ("math500", 0.9)]


@pytest.mark.parametrize("overrides", [[], ["prompt.thinking=true"], ["eval.engine=hf-compiled"]], ids=["tiny", "thinking", "engine"])
def test_a_runs_evaluation_file_and_its_record_name_one_evaluation(tmp_path, overrides):
    """The id a run names its file by is the one a record of that evaluation gives (every benchmark but the task's own split,
    whose task settings the record does not hold): `s2d-bench eval` and a run key the same evaluation alike."""
    from s2d_bench.identity import EVAL_SEED, record_evaluation_id

    (tmp_path / "aime24.jsonl").write_text('{"id": "1", "problem": "p", "answer": "3"}\n')
    cfg = load_config(None, [f"run_dir={tmp_path}", f"task.data_dir={tmp_path}", "eval.benchmarks=[{name: task}, {name: aime24, limit: 1}]",
                             *overrides])
    task, aime = Runner(cfg).targets
    for target in (task, aime):
        record = dataclasses.replace(RECORD, benchmark=target.benchmark, eval_config=target.protocol(), engine=cfg.eval.engine,
                                     eval_seed=EVAL_SEED, thinking=cfg.prompt.thinking, data=target.data, limit=target.limit)
        assert (record_evaluation_id(record) == eval_file_hash(cfg, target)) == (target is aime), target.benchmark


def test_memory_settings_and_later_defaults_leave_a_stage_node_id_alone():
    cfg = load_config(None, [])
    step = {"lr": 1e-3, "micro_batch_size": 0, "gradient_checkpointing": False, "mini_batches": 1}
    base = stage_inputs(cfg, step, "p", None)
    assert base["cfg"] == {"lr": 1e-3}
    assert stage_inputs(cfg, {**step, "micro_batch_size": 4, "gradient_checkpointing": True}, "p", None) == base
    assert stage_inputs(cfg, {**step, "mini_batches": 2}, "p", None)["cfg"] == {"lr": 1e-3, "mini_batches": 2}
    assert stage_inputs(cfg, step, "p", "t") != base and stage_inputs(cfg, step, "q", None) != base
    assert without({"a": 1, "b": 2, "c": 3}, ("a",), {"b": 2, "c": 4}) == {"c": 3}


def test_hashes_are_short_stable_and_order_free_and_seeds_come_from_ids():
    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1}) == "e6f20bdc3757"
    assert len(config_hash({})) == 12
    assert node_seed("opd-0f76fc3ce465") == 0x0F76FC3C
    assert node_seed("base-student-cbf31b0232f7") == 0xCBF31B02


def test_a_model_from_a_path_is_named_by_its_weights_as_earlier_runs_named_it(tmp_path, monkeypatch):
    from s2d_bench.plan import plan

    monkeypatch.chdir(tmp_path)
    (tmp_path / "pm").mkdir()
    (tmp_path / "pm" / "config.json").write_text('{"a": 1}')
    (tmp_path / "pm" / "model.safetensors").write_bytes(b"weights")

    def teacher_id():
        return next(n.id for n in plan(load_config(None, ["teacher.builder=", "teacher.path=pm"])) if n.stage == "base" and n.role == "teacher")

    assert teacher_id() == "base-teacher-690d4df12a0e"
    (tmp_path / "pm" / "model.safetensors").write_bytes(b"weighs")  # same folder, other weights: another model
    assert teacher_id() != "base-teacher-690d4df12a0e"


def test_a_value_json_cannot_write_is_hashed_as_its_text():
    from pathlib import Path

    assert config_hash({"p": Path("/x")}) == config_hash({"p": "/x"})


def test_without_leaves_out_keys_inside_sections_at_any_depth_and_later_defaults_there():
    from s2d_bench.identity import without

    values = {"eval": {"samples": 4, "max_batch_tokens": 9, "deep": {"x": 1, "y": 2}}, "seed": 3, "mode": "a", "flat": 5,
              "stages": {"opd": {"new": 0, "lr": 1.0}}}
    left_out = ("seed", "eval.max_batch_tokens", "eval.deep.y", "flat.sub")  # "flat.sub" names a key of a non-section: no effect
    defaults = {"mode": "a", "stages.opd.new": 0}
    assert without(values, left_out, defaults) == {"eval": {"samples": 4, "deep": {"x": 1}}, "flat": 5, "stages": {"opd": {"lr": 1.0}}}
    assert without(values, (), {"stages.opd.new": 1})["stages"] == {"opd": {"new": 0, "lr": 1.0}}  # not at its later default: kept
    assert without({"eval": {"a.b": 1, "a": 2}}, ("eval.a",), {}) == {"eval": {"a.b": 1}}  # a dotted name inside is not a path


def test_extraction_joins_a_protocol_only_where_it_differs_from_what_earlier_records_used(tmp_path):
    """Records from before the setting were read by the last box: a protocol at last_box hashes as they did (config ids,
    file names), registered benchmarks read by joined boxes form another protocol, and so another leaderboard cell."""
    from s2d_bench.identity import legacy_eval_key

    data = f"task.data_dir={tmp_path}"
    (tmp_path / "aime24.jsonl").write_text('{"id": "1", "problem": "p", "answer": "3"}\n')
    base = [f"run_dir={tmp_path}", data, "eval.benchmarks=[{name: task}, {name: aime24}]"]
    cfg = load_config(None, base)
    task, aime = Runner(cfg).targets
    assert "extraction" not in task.protocol() and aime.protocol()["extraction"] == "boxes"
    last = load_config(None, base[:-1] + ["eval.benchmarks=[{name: task}, {name: aime24, extraction: last_box}]"])
    assert "extraction" not in Runner(last).targets[1].protocol()  # as an aime24 record made before the setting
    assert eval_file_hash(last, Runner(last).targets[1]) != eval_file_hash(cfg, aime)
    joined = load_config(None, base + ["eval.extraction=boxes"])
    assert Runner(joined).targets[0].protocol()["extraction"] == "boxes" and run_hash(joined) != run_hash(cfg)
    assert run_hash(load_config(None, base + ["eval.extraction=last_box"])) == run_hash(cfg)
    assert eval_key(dataclasses.replace(RECORD, eval_config={"samples": 4, "extraction": "boxes"})) != eval_key(RECORD)
    assert legacy_eval_key(dataclasses.replace(RECORD, eval_config={"samples": 4, "extraction": "boxes"})) != legacy_eval_key(RECORD)
    with pytest.raises(Exception, match="extraction 'first'"):
        load_config(None, ["eval.extraction=first"])


def test_a_run_keys_its_record_by_its_file_and_a_record_put_again_is_one_row(tmp_path):
    """put_record with a run's file id keys the row by that id (two file ids: two evaluations, though the record says
    the same), and a record put again (a re-evaluation) replaces its row."""
    from s2d_bench.identity import eval_keys, put_record
    from s2d_bench.store import Store

    record = dataclasses.replace(RECORD, node="opd-123").to_dict()
    assert eval_keys(record, "abc")[0] == "opd-123:math500:abc"
    store = Store(tmp_path / "s.sqlite")
    put_record(store, "run", record, "abc")
    put_record(store, "run", {**record, "mean": 0.7}, "abc")
    assert [r["mean"] for r in store.evals()] == [0.7]
    put_record(store, "run", record, "abd")  # the task's own split under other task settings: another evaluation
    assert sorted(r["mean"] for r in store.evals()) == [0.5, 0.7]


def test_without_keeps_the_plain_values_of_a_list_whose_sections_it_trims():
    values = {"benchmarks": ["aime24", {"name": "math500", "limit": 5, "extraction": "boxed"}], "name": "x"}
    assert without(values, ("benchmarks.extraction",), {}) == {"benchmarks": ["aime24", {"name": "math500", "limit": 5}], "name": "x"}
