"""One training step of each stage at real model size: tokens/s and model-FLOPs utilisation.

Builds a Qwen3-1.7B-shaped model from config (random weights; no hub needed) as the trained model
of every stage and, for stages 2a/2b, a second one as the frozen teacher. Each step goes through
the backend's own update functions (`policy_updates`, `distill_update` on a `LocalRuntime`), on
a fixed batch of random prompt tokens with sampled completions. Reported per stage: sampling
tokens/s (the rollout), training tokens/s (forward + backward + AdamW over prompt + completion
tokens; for 2a/2b the teacher's forward included) and MFU = model FLOPs / (time x peak), where
model FLOPs = 6 x (trained params) x tokens (+ 2 x teacher params x tokens) + attention, not
counting the recomputation of activation checkpointing.

    python benchmarks/stage_steps.py                      # GPU, bf16, Qwen3-1.7B shape
    python benchmarks/stage_steps.py --shape tiny --device cpu   # smoke test of the script
    python benchmarks/stage_steps.py --decode --out results/decode_step.json   # the sampler's decode step alone

Writes results/stage_steps.json. `--decode` measures instead one decode step of the sampler (ms/step at
--sequences rows, EOS off) three ways: the eager loop (`sampling.sample`: shared-prefix cache, eviction),
the static-shape loop eagerly, and the compiled step (`static_decode`: CUDA graphs on a GPU); each
step's time is the difference of two generation lengths over their difference, so the prefill and
the compilation drop out. Beside it the bound: the weights' bytes (plus the KV cache read at the
mean position) over the device-to-device copy bandwidth measured in the same run.
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from pathlib import Path

import torch
from transformers import Qwen3Config, Qwen3ForCausalLM

from s2d_bench.generation.sampling import Sampling, sample
from s2d_bench.generation.static_decode import sample_static
from s2d_bench.models.sequences import Batch, positions

SHAPES = {  # Qwen3-1.7B's published config.json, and a tiny one for smoke tests
    "qwen3-1.7b": dict(vocab_size=151936, hidden_size=2048, intermediate_size=6144, num_hidden_layers=28,
                       num_attention_heads=16, num_key_value_heads=8, head_dim=128, tie_word_embeddings=True),
    "tiny": dict(vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, head_dim=16, tie_word_embeddings=True),
}
PEAK_FLOPS = {"cuda": 989.4e12, "cpu": float("nan")}  # H100 SXM dense bf16


def build(shape: str, device: str, dtype: torch.dtype, seed: int) -> Qwen3ForCausalLM:
    torch.manual_seed(seed)
    cfg = Qwen3Config(**SHAPES[shape], max_position_embeddings=40960, rope_theta=1e6, attn_implementation="sdpa")
    with torch.device(device):
        model = Qwen3ForCausalLM(cfg).to(dtype)
    model.gradient_checkpointing_enable()  # activations of every layer at 10k tokens would not fit
    model.config.use_cache = False
    return model


def n_matmul_params(model: Qwen3ForCausalLM) -> int:
    """Parameters that take part in a matrix product per token (the input embedding is a lookup)."""
    total = sum(p.numel() for p in model.parameters())
    return total if model.config.tie_word_embeddings else total - model.get_input_embeddings().weight.numel()


def attention_flops(model: Qwen3ForCausalLM, seq: int) -> float:
    """Per token, forward, causal: 2 matmuls x 2 FLOPs x heads x head_dim x seq / 2."""
    c = model.config
    return 2 * c.num_hidden_layers * c.num_attention_heads * c.head_dim * seq


def rollout(model, n: int, prompt_len: int, new_tokens: int, device: str) -> tuple[Batch, float]:
    """Random prompts, sampled completions (EOS disabled so every row has new_tokens)."""
    g = torch.Generator(device=device).manual_seed(0)
    ids = torch.randint(100, model.config.vocab_size, (n, prompt_len), device=device, generator=g)
    mask = torch.ones_like(ids)
    sync(device)
    start = time.perf_counter()
    model.config.use_cache = True
    comp, cmask = sample(model, ids, mask, Sampling(k=1, temperature=1.0, max_new_tokens=new_tokens), -1, 0, list(range(n)))
    model.config.use_cache = False
    sync(device)
    seconds = time.perf_counter() - start
    input_ids = torch.cat([ids, comp], 1)
    attn = torch.cat([mask, cmask.long()], 1)
    batch = Batch(input_ids, attn, positions(attn), comp, cmask.float(), prompt_len)
    return batch, comp.numel() / seconds


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str, repeats: int) -> float:
    fn()  # warm-up (allocator, kernels)
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync(device)
    return (time.perf_counter() - start) / repeats


def _deepspeed_runtime(bf16: bool):
    from s2d_bench.backends.deepspeed_backend import DeepSpeedRuntime
    from s2d_bench.config import DeepSpeedConfig

    return DeepSpeedRuntime(DeepSpeedConfig(zero_stage=2, bf16=bf16))


def copy_bandwidth(device: str, gib: float = 2.0) -> float:
    """Bytes read plus written per second by a device-to-device copy of `gib` GiB: the memory-bound ceiling."""
    src = torch.empty(int(gib * 2**30) // 2, dtype=torch.bfloat16, device=device)
    dst = torch.empty_like(src)
    seconds = timed(lambda: dst.copy_(src), device, 10)
    return 2 * src.numel() * src.element_size() / seconds


def decode_steps(args: argparse.Namespace, dtype: torch.dtype) -> dict:
    """ms per decode step of the three loops at one shape, and the bandwidth bound (see the module docstring)."""
    model = build(args.shape, args.device, dtype, 0).eval()
    model.gradient_checkpointing_disable()
    model.config.use_cache = True
    g = torch.Generator(device=args.device).manual_seed(0)
    ids = torch.randint(100, model.config.vocab_size, (args.sequences, args.prompt_len), device=args.device, generator=g)
    mask = torch.ones_like(ids)
    seeds = list(range(args.sequences))
    short, long = args.new_tokens // 4, args.new_tokens
    loops = {"eager (shared prefix)": lambda n: sample(model, ids, mask, Sampling(max_new_tokens=n), -1, 0, seeds),
             "static, eager": lambda n: sample_static(model, ids, mask, Sampling(max_new_tokens=n), -1, 0, seeds, compiled=False),
             "static, compiled": lambda n: sample_static(model, ids, mask, Sampling(max_new_tokens=n), -1, 0, seeds)}
    rows, tokens = [], {}
    for name, run in loops.items():
        start = time.perf_counter()
        run(short)  # warm-up; the compiled loop compiles (and records its graphs) here
        sync(args.device)
        warm = time.perf_counter() - start
        t_short, t_long = (timed(lambda n=n: tokens.__setitem__((name, n), run(n)[0]), args.device, args.repeats) for n in (short, long))
        ms = (t_long - t_short) / (long - short) * 1e3
        rows.append({"loop": name, "ms_per_step": ms, "first_call_s": warm})
        print(f"{name:<22} {ms:8.3f} ms/step   first call {warm:6.1f} s", flush=True)
    same = {name: bool(torch.equal(tokens[(name, long)], tokens[("eager (shared prefix)", long)])) for name in loops}
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    c = model.config
    kv = 2 * c.num_hidden_layers * c.num_key_value_heads * c.head_dim * dtype.itemsize * args.sequences * (args.prompt_len + long / 2)
    bandwidth = copy_bandwidth(args.device) if args.device.startswith("cuda") else float("nan")
    bound = (weights + kv) / bandwidth * 1e3
    print(f"bound: {weights / 2**30:.2f} GiB weights + {kv / 2**30:.2f} GiB KV at {bandwidth / 1e12:.2f} TB/s copy = {bound:.3f} ms/step")
    print("same tokens as the eager loop: " + ", ".join(f"{k} {v}" for k, v in same.items()))
    return {"loops": rows, "same_tokens_as_eager": same, "weights_gib": weights / 2**30, "kv_gib_mean": kv / 2**30,
            "copy_tb_per_s": bandwidth / 1e12, "bound_ms_per_step": bound}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="qwen3-1.7b", choices=sorted(SHAPES))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--sequences", type=int, default=8)
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=1024)
    ap.add_argument("--chunk", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--stages", nargs="+", default=["teacher_rl", "warmup", "opd", "student_rl"])
    ap.add_argument("--runtime", default="local", choices=["local", "deepspeed"],
                    help="local: bf16 weights and AdamW states; deepspeed: ZeRO-2, bf16 compute, fp32 master weights")
    ap.add_argument("--decode", action="store_true", help="measure the sampler's decode step (three loops) instead of training steps")
    ap.add_argument("--out", default="results/stage_steps.json")
    args = ap.parse_args()
    cuda = args.device.startswith("cuda")
    dtype = torch.bfloat16 if cuda and args.runtime == "local" else torch.float32  # DeepSpeed casts to bf16 itself
    device_name = torch.cuda.get_device_name() if cuda else "cpu"
    if args.decode:
        info = {"shape": args.shape, "dtype": str(dtype), "device": device_name, "torch": torch.__version__, "args": vars(args),
                **decode_steps(args, dtype)}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(info, indent=2))
        return
    from s2d_bench import chunked, losses
    from s2d_bench.backends.runtime import LocalRuntime
    from s2d_bench.backends.torch_backend import distill_update, policy_updates
    from s2d_bench.config import DistillConfig, GRPOConfig

    teacher = build(args.shape, args.device, dtype, 1).eval()
    rt = LocalRuntime() if args.runtime == "local" else _deepspeed_runtime(cuda)
    teacher = rt.frozen(teacher)
    n_s = n_t = n_matmul_params(teacher)  # same shape
    rows = []
    for stage in args.stages:
        # A fresh model per stage, as the pipeline loads one: a DeepSpeed engine lives as long as the
        # model it trained (its hooks stay on the module), so reusing one model would stack engines.
        student = build(args.shape, args.device, dtype, 0)
        sampler = teacher if stage == "warmup" else student
        batch, sample_tps = rollout(sampler, args.sequences, args.prompt_len, args.new_tokens, args.device)
        trainer = rt.trainer(student, lr=1e-6, max_norm=1.0)
        tokens = batch.input_ids.numel()
        if stage.endswith("_rl"):
            adv = losses.grpo_advantages(torch.randn(args.sequences // 2, 2, device=args.device)).flatten()
            step = lambda: policy_updates(trainer, None, batch, adv, GRPOConfig(), rt)  # noqa: E731
            flops = (6 * n_s + 3 * attention_flops(student, tokens // args.sequences)) * tokens
        else:
            objective = chunked.Objective("forward" if stage == "warmup" else "reverse")
            step = lambda: distill_update(trainer, teacher, batch, objective, DistillConfig(chunk_size=args.chunk), rt)  # noqa: E731
            flops = (6 * n_s + 2 * n_t + 4 * attention_flops(student, tokens // args.sequences)) * tokens
        if args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        seconds = timed(step, args.device, args.repeats)
        peak = torch.cuda.max_memory_allocated() / 2**30 if args.device.startswith("cuda") else float("nan")
        rows.append({"stage": stage, "tokens_per_step": tokens, "step_s": seconds, "train_tokens_per_s": tokens / seconds,
                     "sample_tokens_per_s": sample_tps, "mfu": flops / seconds / PEAK_FLOPS["cuda" if args.device.startswith("cuda") else "cpu"],
                     "peak_gib": peak})
        print(f"{stage:<11} step {seconds:7.3f} s  train {tokens / seconds:9.0f} tok/s  MFU {rows[-1]['mfu']:.3f}  "
              f"sample {sample_tps:8.0f} tok/s  peak {peak:.1f} GiB", flush=True)
        trainer.finish()
        del trainer, student, step
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
    info = {"runtime": args.runtime, "shape": args.shape, "params_trained": sum(p.numel() for p in teacher.parameters()), "dtype": str(dtype),
            "device": device_name, "args": vars(args), "stages": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(info, indent=2))


if __name__ == "__main__":
    main()
