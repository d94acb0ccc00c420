"""Where a compiled decode step's time goes (GPU): the step alone, the draw, a host check, and the profiler's top ops.

`benchmarks/stage_steps.py --decode` gives ms/step of the whole loops; this splits `hf-compiled`'s
step at the same shape (Qwen3-1.7B, bf16, 8 rows, 128-token prompts): the compiled forward replayed
on fixed inputs, `sampling.next_token` over the whole vocabulary, one block of uniforms drawn and
copied, one `done.all()` check, then torch.profiler's tables (CPU and CUDA self time) over a
64-token generation. Prints JSON and the tables; writes `$OUT/diag.json` (or /tmp).

    PYTHONPATH=. python3 benchmarks/decode_profile.py                     # on the device
    DIAG_DEV=cpu DIAG_SHAPE=tiny python benchmarks/decode_profile.py      # smoke test here
"""

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402
from stage_steps import build, sync  # noqa: E402

from s2d_bench.generation import static_decode as sd  # noqa: E402
from s2d_bench.generation.sampling import Sampling, UniformStream, generators, next_token  # noqa: E402


def per_call_ms(fn, dev: str, reps: int = 50) -> float:
    fn()
    sync(dev)
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    sync(dev)
    return (time.perf_counter() - start) / reps * 1e3


def main() -> None:
    dev, shape = os.environ.get("DIAG_DEV", "cuda"), os.environ.get("DIAG_SHAPE", "qwen3-1.7b")
    model = build(shape, dev, torch.bfloat16 if dev == "cuda" else torch.float32, 0).eval()
    model.gradient_checkpointing_disable()
    model.config.use_cache = True
    n, p = 8, 128
    ids = torch.randint(100, model.config.vocab_size - 1, (n, p), device=dev)
    mask = torch.ones_like(ids)
    run = lambda m: sd.sample_static(model, ids, mask, Sampling(max_new_tokens=m), -1, 0, list(range(n)))  # noqa: E731
    run(64), run(256)  # compiles both cache lengths (256 and 512)
    out = {"loop_ms_step": (per_call_ms(lambda: run(256), dev, 3) - per_call_ms(lambda: run(64), dev, 3)) / 192}
    length = sd.cache_length(p, 256)
    cache, step = sd._cache(model, n, length), sd.compiled_step(model)
    full = torch.ones((n, length), dtype=torch.long, device=dev)
    tok, pos, at = torch.zeros((n, 1), dtype=torch.long, device=dev), torch.full((n, 1), p, device=dev), torch.tensor([p], device=dev)
    with torch.no_grad():
        out["forward_ms"] = per_call_ms(lambda: step(input_ids=tok, attention_mask=full, position_ids=pos, past_key_values=cache,
                                                     use_cache=True, cache_position=at), dev)
    logits = torch.randn(n, model.config.vocab_size, device=dev)
    gens = generators(list(range(n)))
    out["uniform_block_ms"] = per_call_ms(lambda: UniformStream(gens, 1, dev).at(0), dev)
    out["next_token_ms"] = per_call_ms(lambda: next_token(logits, Sampling(), torch.rand(n, dtype=torch.float64, device=dev)), dev)
    out["host_check_ms"] = per_call_ms(lambda: bool((tok == 0).all()), dev)
    print(json.dumps(out, indent=1), flush=True)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev == "cuda" else [])) as prof:
        run(64)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
    if dev == "cuda":
        print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=15))
    (Path(os.environ.get("OUT", "/tmp")) / "diag.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
