"""Parameter counts and a per-stage memory estimate, reported before any stage runs.

Model states only (weights, gradients, optimizer), per device, for the backend's precision and
ZeRO stage: activations and rollout KV caches depend on sequence lengths and come on top. Bytes
per parameter follow DeepSpeed's accounting: mixed precision keeps bf16 weights and gradients
(2 + 2) and fp32 master weights plus Adam's two moments (12); plain fp32 training keeps 4 + 4 + 8.
ZeRO-1 shards the optimizer states over the ranks, ZeRO-2 also the gradients, ZeRO-3 also the
weights; offload moves the optimizer states (and with offload_params the weights) to the host.
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 2**30


@dataclass(frozen=True)
class Precision:
    weights: int  # bytes per parameter
    grads: int
    optimizer: int


BF16_MIXED = Precision(2, 2, 12)
FP32 = Precision(4, 4, 8)
PRECISIONS = {"bf16-mixed": BF16_MIXED, "fp32": FP32}


def count_params(ref: str) -> int:
    """Parameters of a local HF directory or hub id, from its config alone (meta device, no weights)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from s2d_bench.models.refs import load_kwargs, resolve_model

    ref = resolve_model(ref, tokenizer=False)
    config = AutoConfig.from_pretrained(ref, **load_kwargs(ref))
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def trained_bytes(params: int, p: Precision, zero: int, world: int, offload_optimizer: bool, offload_params: bool) -> tuple[float, float]:
    """(device, host) bytes per rank of a trained model's states."""
    weights = params * p.weights / (world if zero >= 3 else 1)
    grads = params * p.grads / (world if zero >= 2 else 1)
    optimizer = params * p.optimizer / (world if zero >= 1 else 1)
    device, host = weights + grads + optimizer, 0.0
    if offload_optimizer:
        device, host = device - optimizer, host + optimizer
    if offload_params:
        device, host = device - weights, host + weights
    return device, host


def frozen_bytes(params: int, p: Precision, sharded: bool, world: int) -> float:
    return params * p.weights / (world if sharded else 1)


def stage_estimates(params: dict[str, int], stages: list[str], p: Precision, zero: int, world: int,
                    offload_optimizer: bool = False, offload_params: bool = False, teacher_zero3: bool = False) -> list[dict]:
    """One row per registered stage name: which model trains, and device/host GiB per rank for its model states."""
    from s2d_bench.stages import STAGES

    rows = []
    for stage in stages:
        role = STAGES.get(stage).trains
        device, host = trained_bytes(params[role], p, zero, world, offload_optimizer, offload_params)
        if STAGES.get(stage).needs_teacher:
            device += frozen_bytes(params["teacher"], p, teacher_zero3, world)
        rows.append({"stage": stage, "trains": role, "params": params[role], "device_gib": device / GIB, "host_gib": host / GIB})
    return rows


def render(report: dict) -> str:
    """The preflight table printed before the first stage."""
    p = report["params"]
    lines = [f"preflight: teacher {p['teacher'] / 1e6:,.1f}M params, student {p['student'] / 1e6:,.1f}M params; "
             f"backend {report['backend']}, {report['precision']}, ZeRO-{report['zero_stage']}, {report['world']} rank(s)",
             "  model-state memory per rank (activations and KV caches come on top):"]
    for row in report["stages"]:
        lines.append(f"    {row['stage']:<11} trains {row['trains']:<8} device {row['device_gib']:8.2f} GiB   host {row['host_gib']:8.2f} GiB")
    return "\n".join(lines)
