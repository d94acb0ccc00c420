"""The preflight memory model against a measured peak: one GRPO and one OPD update on the CPU.

For each micro-batch size and with or without activation checkpointing, a fresh process builds a
small Qwen3 (and a teacher for OPD), takes a warm-up update (so AdamW's states exist), then
measures the peak resident memory of one more update above the memory just before it, and its
wall time (one update: forward, backward and AdamW over the 16 sequences). Large
allocations are served by mmap (MALLOC_MMAP_THRESHOLD_), so freed tensors leave the resident
set and the peak is the update's own. The estimate beside it is budget.training_bytes
(activations, logits chunk, teacher hidden states) plus the gradients (one float32 copy of the
trained parameters), the part of the update that is not there before it.

    python benchmarks/memory_model.py          # prints the table, writes results/memory_model.json
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
SHAPE = dict(vocab_size=4096, hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4,
             num_key_value_heads=2, head_dim=64, tie_word_embeddings=True)
SEQUENCES, PROMPT, NEW, CHUNK = 16, 128, 128, 256
CASES = [(stage, micro, ckpt) for stage in ("grpo", "opd") for micro in (0, 4, 1) for ckpt in (False, True)]


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field)) / 1024


def _reset_peak() -> None:
    """Linux: VmHWM starts again from the current resident set (getrusage's ru_maxrss would start a forked child at
    its parent's resident set, and keeps the warm-up's peak)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def one(stage: str, micro: int, ckpt: bool) -> dict:
    """Runs in its own process: the measured peak of one update and the model's estimate, in MiB."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from s2d_bench import budget, chunked, losses
    from s2d_bench.backends.runtime import AdamWTrainer, LocalRuntime
    from s2d_bench.backends.torch_backend import distill_update, policy_updates
    from s2d_bench.config import DistillConfig, GRPOConfig
    from s2d_bench.models.sequences import join

    torch.manual_seed(0)
    config = Qwen3Config(**SHAPE, max_position_embeddings=1024)
    model = Qwen3ForCausalLM(config)
    teacher = Qwen3ForCausalLM(config).eval() if stage == "opd" else None
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, SHAPE["vocab_size"], (PROMPT,), generator=g).tolist() for _ in range(SEQUENCES)]
    mask = torch.ones(SEQUENCES, NEW)
    for i in range(SEQUENCES):  # completions of different lengths, right-padded, as rollouts are
        mask[i, NEW // 2 + (i * 37) % (NEW // 2):] = 0
    batch = join(prompts, torch.randint(0, SHAPE["vocab_size"], (SEQUENCES, NEW), generator=g), mask, 0)
    trainer, rt = AdamWTrainer(model, 1e-5, 1.0), LocalRuntime()
    advantages = losses.grpo_advantages(torch.randn(SEQUENCES // 2, 2, generator=g)).flatten()

    def update(m: int, c: bool) -> None:
        if stage == "grpo":
            policy_updates(trainer, None, batch, advantages, GRPOConfig(chunk_size=CHUNK, micro_batch_size=m, gradient_checkpointing=c), rt)
        else:
            distill_update(trainer, teacher, batch, chunked.Objective("reverse"),
                           DistillConfig(chunk_size=CHUNK, micro_batch_size=m, gradient_checkpointing=c), rt)

    update(1, True)  # the smallest update first: AdamW's states now exist, and little is left in the heap
    _reset_peak()
    before = _status_mib("VmRSS")
    start = time.perf_counter()
    update(micro, ckpt)
    seconds = time.perf_counter() - start
    peak = _status_mib("VmHWM")
    st = budget.StageShape(sequences=SEQUENCES, samples=2 if stage == "grpo" else 1, prompt_tokens=PROMPT, new_tokens=NEW,
                           micro_batch=micro, checkpointing=ckpt, chunk=CHUNK, kv_budget=0)
    shape = budget.Shape.of(config)
    parts = budget.training_bytes(shape, shape if teacher is not None else None, st, 4)
    grads = sum(p.numel() for p in model.parameters()) * 4
    return {"stage": stage, "micro_batch": micro or SEQUENCES, "checkpointing": ckpt, "measured_mib": round(peak - before, 1),
            "step_s": round(seconds, 2),
            "estimate_mib": round((sum(parts.values()) + grads) / 2**20, 1),
            **{f"{k}_mib": round(v / 2**20, 1) for k, v in parts.items()}, "grads_mib": round(grads / 2**20, 1)}


def main() -> None:
    rows = []
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "65536"}
    for stage, micro, ckpt in CASES:
        out = subprocess.run([sys.executable, __file__, "--one", stage, str(micro), str(int(ckpt))], env=env,
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{'stage':<6}{'micro':>6}{'ckpt':>6}{'measured MiB':>14}{'estimate MiB':>14}{'ratio':>7}{'step s':>8}")
    for r in rows:
        print(f"{r['stage']:<6}{r['micro_batch']:>6}{str(r['checkpointing']):>6}{r['measured_mib']:>14.1f}{r['estimate_mib']:>14.1f}"
              f"{r['estimate_mib'] / r['measured_mib']:>7.2f}{r['step_s']:>8.2f}")
    meta = {"shape": SHAPE, "sequences": SEQUENCES, "prompt_tokens": PROMPT, "new_tokens": NEW, "chunk": CHUNK,
            "machine": "2-core CPU, float32, nothing else running", "rows": rows}
    (ROOT / "results").mkdir(exist_ok=True)
    (ROOT / "results" / "memory_model.json").write_text(json.dumps(meta, indent=2) + "\n")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--one":
        print(json.dumps(one(sys.argv[2], int(sys.argv[3]), bool(int(sys.argv[4])))))
    else:
        main()
