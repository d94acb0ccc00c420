"""The DeepSpeed backend across processes: 2 CPU ranks on gloo against one rank.

ds_worker.py takes one step of each stage's update on a fixed batch, each rank on its half of the
prompts. Data parallelism is only correct if the ranks end with identical parameters and those
equal one process stepping on the whole batch (each rank's loss is weighted by its share of the
batch's tokens, so the averaged gradient is the whole batch's token mean). ZeRO 2 and 3 both.
DeepSpeed JIT-builds its shared-memory helper on first use (about 30 s on a fresh machine; cached
under ~/.cache/torch_extensions after that).
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import SHARED_DATA

pytest.importorskip("deepspeed")

from s2d_bench.config import load_config  # noqa: E402
from s2d_bench.generation.engine import EngineConfig  # noqa: E402
from s2d_bench.generation.hf import HFEngine  # noqa: E402
from s2d_bench.harness.evaluate import evaluate  # noqa: E402
from s2d_bench.models.builders import load_pretrained, save, tiny_qwen3_student  # noqa: E402
from s2d_bench.identity import EVAL_SEED  # noqa: E402
from s2d_bench.pipeline import Runner  # noqa: E402
from s2d_bench.store import Store  # noqa: E402

WORKER = Path(__file__).with_name("ds_worker.py")
ZERO_STAGES = "2,3"
MICRO_SIZES = "0,1,3"  # 0: a rank's whole batch in one forward/backward


def _ports(n: int) -> list[int]:
    """n distinct free ports (held open together, so two process groups never share one)."""
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _launch(out: Path, world: int, port: int, args: tuple[str, ...] = (ZERO_STAGES, MICRO_SIZES), **env_extra: str) -> list[subprocess.Popen]:
    procs = []
    for rank in range(world):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", **env_extra}
        procs.append(subprocess.Popen([sys.executable, str(WORKER), str(out), *args], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    return procs


def _finish(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        output, _ = proc.communicate(timeout=240)
        assert proc.returncode == 0, f"exit {proc.returncode}: {output[-3000:]}"


def test_two_ranks_agree_and_equal_one_rank_after_a_step_of_each_stage(tmp_path):
    """... and micro-batches change nothing: 1 or 3 sequences per forward/backward (3 leaves a short last one),
    gradients accumulated, give the parameters of the whole batch at once, on 1 rank and on 2. The metrics each
    step logs are the whole batch's token means too (the ranks' completions differ in length, so a mean of the
    two ranks' own token means would not be)."""
    two, one = _ports(2)
    args = (ZERO_STAGES, MICRO_SIZES)
    _finish(_launch(tmp_path, 2, two, args) + _launch(tmp_path, 1, one, args))
    start = torch.cat([p.detach().flatten() for p in tiny_qwen3_student(seed=0)[0].parameters()])
    for zero in ZERO_STAGES.split(","):
        single = torch.load(tmp_path / f"{zero}-mb0-rank0-of-1.pt")
        assert (single - start).abs().max() > 1e-4, "nothing trained"
        for micro in MICRO_SIZES.split(","):
            rank0, rank1, alone = (torch.load(tmp_path / f"{zero}-mb{micro}-{name}.pt") for name in ("rank0-of-2", "rank1-of-2", "rank0-of-1"))
            torch.testing.assert_close(rank0, rank1, rtol=0, atol=0, msg=f"ZeRO-{zero}, micro {micro}: the ranks disagree")
            torch.testing.assert_close(rank0, single, rtol=1e-4, atol=1e-5, msg=f"ZeRO-{zero}, micro {micro}: 2 ranks differ from 1 rank, whole batch")
            torch.testing.assert_close(alone, single, rtol=1e-4, atol=1e-5, msg=f"ZeRO-{zero}, micro {micro}: 1 rank differs from its whole batch")
            logged = [json.loads((tmp_path / f"{zero}-mb{micro}-{name}.json").read_text()) for name in ("rank0-of-2", "rank1-of-2", "rank0-of-1")]
            assert logged[0] == logged[1], f"ZeRO-{zero}, micro {micro}: the ranks log different metrics"
            for two_ranks, one_rank in zip(logged[0], logged[2]):  # a step's metrics are the whole batch's token means
                assert two_ranks.keys() == one_rank.keys() and two_ranks == pytest.approx(one_rank, rel=1e-4, abs=1e-6), (zero, micro)


def test_s2d_bench_run_on_two_ranks_trains_together_and_writes_once(tiny_overrides, tmp_path):
    """The launcher's view: two processes of `s2d-bench run backend=deepspeed`. Both ranks evaluate (each its share
    of the problems), rank 0 alone writes: every score equals the one a single process computes for that model."""
    tiny_overrides = [*tiny_overrides, "task.n_test=7", "eval.prompts_per_batch=3"]  # uneven shares, several batches
    port, = _ports(1)
    store = tmp_path / "store.sqlite"
    procs = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank), "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu"}
        cmd = [sys.executable, "-m", "s2d_bench.cli", f"--local_rank={rank}", "run", *tiny_overrides, "backend=deepspeed", f"store={store}"]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [proc.communicate(timeout=240) for proc in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-3000:]
    assert "records:" in outputs[0][0] and "records:" not in outputs[1][0]
    run = tmp_path / "run"
    nodes = sorted(p.name for p in (run / "nodes").iterdir())
    records = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
    assert sorted(r["node"] for r in records) == nodes and all(r["backend"] == "deepspeed" for r in records)
    for node in nodes:
        if not node.startswith("base"):
            assert (run / "nodes" / node / "metrics.jsonl").read_text().count("\n") == 2  # one row a step, not one per rank
    assert len(Store(str(store)).evals("tiny")) == len(nodes)
    runner = Runner(load_config(None, [*tiny_overrides, f"store={tmp_path / 'one.sqlite'}"]))
    (target,) = runner.targets
    for record in records:
        engine = HFEngine.load(str(run / "nodes" / record["node"] / "model"), EngineConfig(device="cpu", prompts_per_batch=5))
        alone = evaluate(engine, target.problems, target.cfg, EVAL_SEED, target.grader)
        assert record["n"] == 7 and record["per_problem"] == alone.per_problem and record["mean"] == alone.score.mean


def test_two_zero3_ranks_sampling_with_vllm_train_exactly_as_with_the_builtin_sampler(tmp_path):
    """GRPO then OPD on 2 ranks under ZeRO-3: each rank's vLLM copy (tests/fakes/vllm, which samples from
    exactly the weights pushed into it) must get the gathered, current weights before every rollout."""
    fakes = str(Path(__file__).resolve().parent.parent / "fakes")
    ports = _ports(2)
    for engine, port in zip(("hf", "vllm"), ports):
        _finish(_launch(tmp_path, 2, port, ("rollouts", engine), PYTHONPATH=os.pathsep.join([fakes, os.environ.get("PYTHONPATH", "")])))
    hf, vllm = (torch.load(tmp_path / f"{engine}-rank0.pt") for engine in ("hf", "vllm"))
    torch.testing.assert_close(vllm, hf, rtol=0, atol=0)
    torch.testing.assert_close(torch.load(tmp_path / "vllm-rank1.pt"), vllm, rtol=0, atol=0, msg="the ranks disagree")
    start = torch.cat([p.detach().flatten() for seed in (1, 0) for p in tiny_qwen3_student(seed=seed)[0].parameters()])
    assert (hf - start).abs().max() > 1e-4, "nothing trained"


def test_a_micro_batched_bf16_step_accumulates_in_fp32_and_matches_the_whole_step_closer(tmp_path):
    """bf16 under ZeRO-2 accumulates micro-batch gradients in fp32 (`grad_accum_dtype`; DeepSpeed's default is the
    model's bf16): 16 one-sequence micro-batches land closer to the whole batch's step than with bf16 accumulation.
    Measured on the CPU, 1 rank: 0.41% against 0.57% (what remains is bf16 arithmetic on other batch shapes)."""
    [port] = _ports(1)
    _finish(_launch(tmp_path, 1, port, ("bf16",)))
    errors = json.loads((tmp_path / "bf16.json").read_text())
    assert errors["fp32"] < 0.005 and errors["fp32"] < 0.85 * errors["bf16"], errors


def test_zero3_loads_partitioned_so_each_of_two_ranks_holds_half_and_trains_as_one_rank_does(tmp_path):
    """Under ZeRO-3 the backend builds the trained model and the teacher inside zero.Init (transformers'
    HfDeepSpeedConfig path): after loading, each of 2 ranks holds about half of every model's parameters and
    no whole tensor. A GRPO step with a KL anchor (a copy made partition by partition) and an OPD step later,
    the model rank 0 saves is the one a single rank trains and saves from the same checkpoint."""
    source = tmp_path / "source"
    save(*tiny_qwen3_student(seed=0), source)
    two, one = _ports(2)
    _finish(_launch(tmp_path, 2, two, ("partitioned", str(source))) + _launch(tmp_path, 1, one, ("partitioned", str(source))))
    for rank in (0, 1):
        held = json.loads((tmp_path / f"held-rank{rank}-of-2.json").read_text())
        assert held["reference_equal"]
        for role in ("student", "teacher"):
            h = held[role]
            assert h["visible"] == 0, f"rank {rank} holds whole {role} tensors"
            assert abs(h["local"] - h["whole"] / 2) <= h["tensors"], (rank, role, h)  # half, up to one element of padding a tensor
    whole = json.loads((tmp_path / "held-rank0-of-1.json").read_text())["student"]
    assert whole["local"] == whole["whole"] == sum(p.numel() for p in tiny_qwen3_student(seed=0)[0].parameters())
    start, two_ranks, one_rank = (load_pretrained(str(tmp_path / name))[0] for name in ("source", "trained-2", "trained-1"))
    flat = [torch.cat([p.detach().flatten() for p in m.parameters()]) for m in (start, two_ranks, one_rank)]
    assert (flat[1] - flat[0]).abs().max() > 1e-4, "nothing trained (or the saved model is the empty partitions)"
    # float32 sums in another order (two ranks' partitions, the CPU's own kernels): 1.4e-5 on an AVX2-only machine,
    # against 1.2e-3 of training; a wrong partition or a missed update moves a parameter by the training's size
    torch.testing.assert_close(flat[1], flat[2], rtol=1e-4, atol=5e-5, msg="2 partitioned ranks differ from 1")


DATA = SHARED_DATA


@pytest.mark.skipif(not (DATA / "math_train.jsonl").is_file(), reason=f"real data not at {DATA} (set S2D_DATA_DIR)")
def test_the_shipped_paper_config_runs_every_stage_of_every_arm_on_two_ranks(tmp_path):
    """configs/paper-qwen3.yaml through the real loader on 2 CPU ranks under DeepSpeed, as shipped but for the
    models (tiny from-config builders), the device (CPU, fp32) and sizes, lengths and steps scaled down: its
    micro-batches, checkpointing, token budget, ZeRO stage, math task and three benchmarks run as written."""
    port, = _ports(1)
    small = [f"{s}.{k}={v}" for s in ("teacher_rl", "student_rl") for k, v in
             (("steps", 1), ("prompts_per_step", 2), ("samples_per_prompt", 2), ("max_new_tokens", 6), ("micro_batch_size", 1), ("chunk_size", 4))]
    small += [f"{s}.{k}={v}" for s in ("warmup", "opd") for k, v in
              (("steps", 1), ("batch_size", 2), ("max_new_tokens", 6), ("micro_batch_size", 1), ("chunk_size", 4))]
    overrides = [
        "teacher.path=", "teacher.builder=tiny-qwen3-teacher", "teacher.pretrain.steps=0",
        "student.path=", "student.builder=tiny-qwen3-student", "student.pretrain.steps=0",
        "device=cpu", "deepspeed.bf16=false", "threads=1",
        f"task.train_data={DATA / 'math_train.jsonl'}", f"task.data_dir={DATA}", "task.n_labeled=8", "task.n_unlabeled=8", "task.n_test=2",
        *[f"stages.{o}" for o in small], "arms.direct-grpo.overrides.student_rl.steps=1",
        "eval.samples=1", "eval.max_new_tokens=4",
        "eval.benchmarks=[{name: math500, samples: 1, max_new_tokens: 4, limit: 2}, {name: aime24, samples: 1, max_new_tokens: 4, limit: 2},"
        " {name: aime25, samples: 1, max_new_tokens: 4, limit: 2}]",
        f"run_dir={tmp_path / 'run'}", f"store={tmp_path / 'store.sqlite'}",
    ]
    procs = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank), "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu"}
        cmd = [sys.executable, "-m", "s2d_bench.cli", f"--local_rank={rank}", "run", "--config", "paper-qwen3", *overrides]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [proc.communicate(timeout=400) for proc in procs]
    for proc, (_, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-3000:]
    cfg = load_config("paper-qwen3", overrides)
    assert cfg.stages.teacher_rl.gradient_checkpointing and cfg.deepspeed.zero_stage == 2 and cfg.rollout.max_batch_tokens > 0  # as shipped
    records = [json.loads(line) for line in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert {r["stage"] for r in records} == {"base", "teacher_rl", "warmup", "opd", "student_rl"}
    assert {r["task"] for r in records} == {"math500", "aime24", "aime25"}
    assert {a for r in records for a in r["arms"]} == {"direct-grpo", "bridge", "full"}
    assert json.loads((tmp_path / "run" / "preflight.json").read_text())["world"] == 2
