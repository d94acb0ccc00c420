"""The preflight's after-stage phases against a measured peak: an evaluation sampling batch and C2's scoring, CPU.

Each case runs in a fresh process at a scaled Qwen3 shape: it builds the models, then measures the peak resident
memory of the phase (VmHWM, reset just before it) above the memory just before it (large allocations served by mmap,
MALLOC_MMAP_THRESHOLD_, so freed tensors leave the resident set), beside the estimate of the same bytes (`budget.eval_bytes`'s batch, and
`budget.c2_bytes`'s scoring; the weights are there before the phase and left out of both). The update phases are
`memory_model.py`'s. Float32 throughout (the CPU's dtype), one thread.

    python benchmarks/phase_memory.py          # prints the table, writes results/phase_memory.json
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
SHAPE = dict(vocab_size=4096, hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4,
             num_key_value_heads=2, head_dim=64, tie_word_embeddings=True)
TEACHER = {**SHAPE, "hidden_size": 384, "num_hidden_layers": 6, "intermediate_size": 1024}
PROMPT, NEW, SAMPLES, CHUNK = 128, 256, 4, 256
CASES = [("eval", b) for b in (2, 8)] + [("c2", b) for b in (2, 8)]


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field)) / 1024


def _reset_peak() -> None:
    """Linux: the resident peak (VmHWM) starts again from the current resident set, so building the models and importing
    never count as the phase's peak, whatever the allocator kept from them."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def one(phase: str, problems: int) -> dict:
    """Runs in its own process: the measured peak of one phase at `problems` problems a batch, and its estimate, in MiB."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from s2d_bench import budget, chunked
    from s2d_bench.generation.sampling import Sampling, sample
    from s2d_bench.models.sequences import completion_hidden, join

    torch.manual_seed(0)
    student = Qwen3ForCausalLM(Qwen3Config(**SHAPE, max_position_embeddings=1024)).eval()
    teacher = Qwen3ForCausalLM(Qwen3Config(**TEACHER, max_position_embeddings=1024)).eval()
    shapes = {"student": budget.Shape.of(student.config), "teacher": budget.Shape.of(teacher.config)}
    g = torch.Generator().manual_seed(0)
    prompts = torch.randint(1, SHAPE["vocab_size"], (problems, PROMPT), generator=g)
    n = problems * SAMPLES
    batch = join(prompts.repeat_interleave(SAMPLES, 0).tolist(), torch.randint(1, SHAPE["vocab_size"], (n, NEW), generator=g),
                 torch.ones(n, NEW), 0)
    with torch.no_grad():  # kernels and caches of a first forward and a first sampling call, outside the measurement
        student(input_ids=prompts[:1, :8])
        sample(student, prompts[:1, :8], torch.ones_like(prompts[:1, :8]), Sampling(k=1, temperature=1.0, max_new_tokens=4), [], 0, [0],
               SHAPE["vocab_size"])
    _reset_peak()
    before = _status_mib("VmRSS")
    with torch.no_grad():
        if phase == "eval":
            s = Sampling(k=SAMPLES, temperature=1.0, max_new_tokens=NEW)
            sample(student, prompts, torch.ones_like(prompts), s, [], 0, list(range(problems)), SHAPE["vocab_size"])
            estimate = budget.eval_bytes(shapes["student"], 0, problems, SAMPLES, PROMPT, NEW, 4)["work"]
        else:
            chunked.distill_loss(completion_hidden(student, batch), student.get_output_embeddings(), completion_hidden(teacher, batch),
                                 teacher.get_output_embeddings(), batch.completion_ids, batch.completion_mask, chunked.Objective("forward"),
                                 chunk=CHUNK)
            estimate = budget.c2_bytes(shapes["teacher"], shapes["student"], {"teacher": 0, "student": 0}, problems, SAMPLES, PROMPT, NEW,
                                       CHUNK, 4)["scoring"]
    peak = _status_mib("VmHWM")
    return {"phase": phase, "problems": problems, "sequences": n, "measured_mib": round(peak - before, 1),
            "estimate_mib": round(estimate / 2**20, 1)}


def main() -> None:
    rows = []
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "65536"}
    for phase, problems in CASES:
        out = subprocess.run([sys.executable, __file__, "--one", phase, str(problems)], env=env, capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{'phase':<6}{'problems':>9}{'sequences':>10}{'measured MiB':>14}{'estimate MiB':>14}{'ratio':>7}")
    for r in rows:
        print(f"{r['phase']:<6}{r['problems']:>9}{r['sequences']:>10}{r['measured_mib']:>14.1f}{r['estimate_mib']:>14.1f}"
              f"{r['estimate_mib'] / r['measured_mib']:>7.2f}")
    meta = {"student": SHAPE, "teacher": TEACHER, "prompt_tokens": PROMPT, "new_tokens": NEW, "samples": SAMPLES, "chunk": CHUNK,
            "machine": "2-core CPU, float32, one thread", "rows": rows}
    (ROOT / "results").mkdir(exist_ok=True)
    (ROOT / "results" / "phase_memory.json").write_text(json.dumps(meta, indent=2) + "\n")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--one":
        print(json.dumps(one(sys.argv[2], int(sys.argv[3]))))
    else:
        main()
