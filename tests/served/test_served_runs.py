"""`s2d-bench run` with the teacher on a real `s2d-bench serve` (127.0.0.1): the bridge trains, the served teacher is
evaluated through its server, C2 is labelled an estimate, the warmup's rollouts land in the teacher cache and a second
student reuses them; a server killed mid-stage leaves the node unfinished and a rerun completes it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from s2d_bench.config import PretrainConfig, TaskConfig, load_config
from s2d_bench.errors import UserError
from s2d_bench.leaderboards import build
from s2d_bench.models.builders import save, tiny_qwen3_teacher
from s2d_bench.models.pretrain import pretrain
from s2d_bench.pipeline import Runner, run_all
from s2d_bench.store import Store
from s2d_bench.tasks.arithmetic import AdditionTask
from served_server import free_port, serving

TASK = {"n_test": 6, "n_labeled": 16, "n_unlabeled": 64}


@pytest.fixture(scope="module")
def teacher_folder(tmp_path_factory) -> Path:
    """A tiny teacher pretrained briefly on the task, saved: what a user would serve after its RL."""
    root = tmp_path_factory.mktemp("served-runs")
    model, tok = tiny_qwen3_teacher(seed=0)
    task = AdditionTask(TaskConfig(**TASK))
    pretrain(model, tok, task.pretrain_examples, PretrainConfig(steps=30, batch_size=16, lr=3e-3), 0, lambda row: None)
    save(model, tok, root / "teacher")
    return root / "teacher"


def _config(tmp_path: Path, url: str, **extra) -> Path:
    cfg = {
        "name": "served", "run_dir": str(tmp_path / "run"), "device": "cpu", "jobs": 1,
        "teacher": {"server": url, "served_model": "teacher", "http": {"timeout_s": 20, "retries": 1, "concurrency": 4}},
        "student": {"builder": "tiny-qwen3-student", "pretrain": {"steps": 20, "batch_size": 16}},
        "task": TASK,
        "stages": {"warmup": {"steps": 2, "batch_size": 8, "estimator": "topk", "top_k": 16},
                   "opd": {"steps": 3, "batch_size": 8, "estimator": "sampled", "top_k": 8}},
        "arms": {"bridge": {"stages": ["warmup", "opd"]},
                 "warm-lr": {"stages": ["warmup"], "overrides": {"warmup.lr": 3e-4}}},
        "eval": {"samples": 2},
        "diagnostics": {"c2_prompts": 4, "c2_samples": 2},
        **extra,
    }
    path = tmp_path / "served.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_a_run_with_a_served_teacher(teacher_folder, tmp_path):
    with serving(teacher_folder, max_logprobs=20) as (url, _):
        cfg = load_config(str(_config(tmp_path, url)))
        runner = Runner(cfg)
        (records,) = run_all([runner])
    by_stage = {}
    for r in records:
        by_stage.setdefault((r["stage"], r["role"]), []).append(r)
    assert {("base", "teacher"), ("base", "student"), ("warmup", "student"), ("opd", "student")} <= set(by_stage)
    teacher_record = by_stage[("base", "teacher")][0]
    assert teacher_record["model"] == "teacher (served)" and teacher_record["engine"] == "served"  # sampled on its server
    assert (teacher_record["n"], teacher_record["k"]) == (6, 2)
    assert all(r["teacher_model"] == "teacher (served)" for r in records)
    opd = next(n for n in runner.nodes.values() if n.stage == "opd")
    c2 = json.loads((runner.dir.node_dir(opd) / "diagnostics.json").read_text())
    assert c2["teacher"] == "served" and c2["top_k"] == 8
    assert c2["kl_estimate"] == "sampled-token log-ratio (kl_*_topk: top-k + tail lower bound)"
    assert c2["kl_reverse_after"] == pytest.approx(c2["kl_reverse_after"])  # a number, not NaN
    assert {"kl_forward_topk_before", "kl_reverse_topk_after"} <= set(c2)
    rows = [json.loads(line) for line in (runner.dir.node_dir(opd) / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all({"kl_sampled", "kl_reverse_topk", "kl_forward_topk"} <= set(r) for r in rows)
    board = build(Store(cfg.store), "served")  # every leaderboard row says the teacher was served, with its estimators
    assert set(board.main["teacher"]) == {"teacher (served): warmup topk k=16, opd sampled", "teacher (served): warmup topk k=16"}
    assert any("served teacher: sampled-token estimate, top-k 8" in stage for stage in board.c2["stage"])
    # the two arms' warmups (two learning rates) draw the same prompts and seeds from the served teacher: each of the 2
    # steps' rollouts is drawn once, into the cache, and read by the other arm
    warmups = [n for n in runner.nodes.values() if n.stage == "warmup"]
    assert len(warmups) == 2 and warmups[0].seed == warmups[1].seed and warmups[0].id != warmups[1].id
    # one teacher, one student before either warmup, the same seeded samples: the same C2 before both
    before = [{k: v for k, v in json.loads((runner.dir.node_dir(w) / "diagnostics.json").read_text()).items() if k.endswith("_before")}
              for w in warmups]
    # bit for bit, however the two diagnostics' requests met at the server (it scores no request beside another)
    assert len(before[0]) == 4 and before[0] == before[1]
    assert len(list((runner.dir.root / "teacher-cache").glob("*.pt"))) == 2


def test_a_served_teacher_that_dies_mid_stage_leaves_the_node_unfinished_and_a_rerun_completes_it(teacher_folder, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    config = _config(tmp_path, url, stages={"warmup": {"steps": 1, "batch_size": 8, "estimator": "topk", "top_k": 8},
                                            "opd": {"steps": 12, "batch_size": 8, "estimator": "sampled", "top_k": 8}},
                     arms={"bridge": {"stages": ["warmup", "opd"]}}, eval={"samples": 1})
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with serving(teacher_folder, max_logprobs=20, port=port) as (_, server):
        run = subprocess.Popen([sys.executable, "-m", "s2d_bench.cli", "run", "--config", str(config)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        nodes = tmp_path / "run" / "nodes"
        deadline = time.time() + 240
        while not any(p.stat().st_size for p in nodes.glob("opd-*/metrics.jsonl")) if nodes.is_dir() else True:
            assert run.poll() is None, run.stderr.read()
            assert time.time() < deadline, "OPD never started"
            time.sleep(0.05)
        server.kill()  # mid-stage: its first step is logged, eleven are left
        _, err = run.communicate(timeout=120)
    assert run.returncode == 2, err
    last = err.strip().splitlines()[-1]
    assert f"teacher server {url}/v1/completions: unreachable" in last and "after 2 tries" in last
    (opd_dir,) = nodes.glob("opd-*")
    assert not (opd_dir / "model").exists() and not (opd_dir / "stage.json").exists()  # never marked trained

    with serving(teacher_folder, max_logprobs=20, port=port):  # the same command again, with the server back
        run_all([Runner(load_config(str(config)))])
    assert (opd_dir / "model").is_dir() and json.loads((opd_dir / "stage.json").read_text())["steps"] == 12
    assert (opd_dir / "metrics.jsonl").read_text().count("\n") == 12


def test_what_a_served_teacher_cannot_do_is_refused_before_anything_runs(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    path = _config(tmp_path, url)
    cases = {
        "stages.opd.estimator=full": "'full' needs the teacher's whole vocabulary",
        "stages.opd.temperature=0.7": "its log-probs are at temperature 1",
        "arms={b: {stages: [teacher_rl, warmup]}}": "teacher_rl trains the teacher, which lives on teacher.server",
        "backend=trl": "TRL's distillation trainers score with a teacher model resident",
        "stages.opd.teacher_cache=true": "only the warmup's teacher rollouts can be cached",
        "teacher.served_model=": "set served_model too",
    }
    for override, message in cases.items():
        with pytest.raises(UserError, match=message):
            Runner(load_config(str(path), [override]))
    with pytest.raises(UserError, match=rf"teacher server {url}/v1/models: unreachable"):
        Runner(load_config(str(path))).prepare()  # the preflight's probe
    assert not (tmp_path / "run").exists()


def test_two_deepspeed_ranks_train_against_a_served_teacher(teacher_folder, tmp_path):
    """backend=deepspeed on two ranks (ZeRO-2, CPU): each rank asks the server for its share of every step's prompts and
    the ranks train as one; the records are written once."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with serving(teacher_folder, max_logprobs=20) as (url, _):
        config = _config(tmp_path, url, backend="deepspeed", arms={"bridge": {"stages": ["warmup", "opd"]}})
        procs = []
        for rank in range(2):
            env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank), "MASTER_ADDR": "127.0.0.1",
                   "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu"}
            cmd = [sys.executable, "-m", "s2d_bench.cli", f"--local_rank={rank}", "run", "--config", str(config)]
            procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        outputs = [proc.communicate(timeout=400) for proc in procs]
    for proc, (_, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-3000:]
    run = tmp_path / "run"
    records = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
    assert sorted(r["stage"] for r in records) == ["base", "base", "opd", "warmup"]
    for stage, steps in (("warmup", 2), ("opd", 3)):
        (folder,) = (run / "nodes").glob(f"{stage}-*")
        assert (folder / "model").is_dir() and (folder / "metrics.jsonl").read_text().count("\n") == steps
    assert len(list((run / "teacher-cache").glob("*.pt"))) == 2 * 2  # a file per step and rank (each its share)


@pytest.mark.parametrize("thinking", [False, True])
def test_a_served_teachers_evaluation_and_c2_prompt_it_as_the_run_prompts(served_teacher_run, thinking):
    """The served teacher that evaluation and C2 use renders prompts in the run's mode (a template such as Qwen3's renders
    a non-thinking prompt with an empty think block; no server is asked here)."""
    cfg = load_config(None, [*served_teacher_run, "arms={b: {stages: [warmup]}}", "stages.warmup.estimator=topk",
                             f"prompt.thinking={str(thinking).lower()}"])
    served = Runner(cfg).evaluation.served_teacher()
    assert served.thinking is thinking and served.name == "t"


def test_a_served_teachers_c2_is_the_local_teachers_on_the_same_samples(teacher_folder):
    """C2 with the teacher on its server, in evaluation's sampling batches (two here) and 3-position chunks: the top-k + tail
    KL at k = the vocabulary is the exact KL C2 measures with the teacher at hand (the server samples from the per-prompt
    seeds the local teacher would), and the sampled-token estimate is the token mean of the sampled tokens' log-ratio, by
    full logits."""
    from s2d_bench.config import DiagnosticsConfig, HTTPConfig, ModelConfig
    from s2d_bench.diagnostics import c2, kl_both_ways
    from s2d_bench.generation.engine import EngineConfig
    from s2d_bench.generation.hf import HFEngine
    from s2d_bench.generation.protocol import prompt_seeds, stop_ids
    from s2d_bench.generation.sampling import Sampling
    from s2d_bench.models.builders import load_pretrained, tiny_qwen3_student
    from s2d_bench.models.sequences import completion_logits
    from s2d_bench.served.teacher import ServedTeacher

    teacher, tok = load_pretrained(str(teacher_folder), "cpu")
    student, _ = tiny_qwen3_student(seed=2)
    prompts, new_tokens, seed = ["12+7=", "3+45=", "100+2="], 6, 5
    settings, batching = DiagnosticsConfig(c2_samples=2, chunk_size=3), EngineConfig(prompts_per_batch=2)
    exact = kl_both_ways(teacher, student, tok, prompts, new_tokens, seed, settings=settings, batching=batching)
    with serving(teacher_folder) as (url, _):
        cfg = ModelConfig(server=url, served_model="teacher", http=HTTPConfig(timeout_s=30, retries=1, concurrency=4))
        served = ServedTeacher(cfg, tok, stop_ids(teacher, tok), thinking=False)
        asked, rollouts = [], served.rollouts
        served.rollouts = lambda mine, *rest: asked.append(len(mine)) or rollouts(mine, *rest)
        try:
            record = c2(served, [("after", lambda: student)], tok, prompts, new_tokens, seed, False, teacher.config.vocab_size, settings,
                        batching)
        finally:
            served.close()
    estimate = {key[: -len("_after")]: value for key, value in record.items() if key.endswith("_after")}
    assert asked == [2, 1] and min(exact.values()) > 1e-3
    assert estimate["kl_forward_topk"] == pytest.approx(exact["kl_forward"], rel=1e-4)
    assert estimate["kl_reverse_topk"] == pytest.approx(exact["kl_reverse"], rel=1e-4)
    for name, sampler, sign in (("kl_forward", teacher, 1), ("kl_reverse", student, -1)):
        engine = HFEngine(sampler, tok, EngineConfig(prompts_per_batch=0))
        batch = engine.rollouts(prompts, Sampling(k=2, temperature=1.0, max_new_tokens=new_tokens), prompt_seeds(seed, len(prompts))).batch
        with torch.no_grad():
            t_logp, s_logp = (completion_logits(m, batch).log_softmax(-1) for m in (teacher, student))
        ids, mask = batch.completion_ids[..., None], batch.completion_mask
        log_ratio = sign * (t_logp.gather(-1, ids) - s_logp.gather(-1, ids)).squeeze(-1)  # log p_T - log p_S on teacher samples
        assert estimate[name] == pytest.approx(float((log_ratio * mask).sum() / mask.sum()), rel=1e-4), name
