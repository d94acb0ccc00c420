"""Parameter counts and a per-stage memory estimate per rank, reported before any stage runs.

Model states (weights, gradients, optimizer) for the backend's precision and ZeRO stage. Bytes
per parameter follow DeepSpeed's accounting: mixed precision keeps bf16 weights and gradients
(2 + 2) and fp32 master weights plus Adam's two moments (12); plain fp32 training keeps 4 + 4 + 8.
ZeRO-1 shards the optimizer states over the ranks, ZeRO-2 also the gradients, ZeRO-3 also the
weights; offload moves the optimizer states (and with offload_params the weights) to the host.

GRPO with a KL anchor (kl_coef > 0) also holds a frozen copy of the trained model, in the weights'
precision and, under ZeRO-3, partitioned: counted with the states (the "ref" column, included).

On top of the states, a stage needs either its rollouts' KV cache (sampling) or one micro-batch's
training memory (the update), never both at once:
- activations: per layer and token, the tensors autograd keeps in a Qwen3/Llama decoder layer,
  6H + 4I + 4(q + kv) elements plus about 2 per head (fitted, residual < 1 element, to saved-tensor
  counts of 10 layer shapes on the CPU in float32; `tests/test_budget.py` re-measures two). With
  activation checkpointing a layer keeps only its input (H) and one layer is recomputed at a time.
  A padded batch adds SDPA's B x T x T attention mask, kept by every layer (layers + 1 copies, 2
  with checkpointing: measured 79 MiB more than the same batch unpadded at 4 x 1,024 tokens);
- the logits of one chunk: chunk x V float32 values, about 4 live copies for the trained model
  (logits, log-softmax, their gradients) and 2 for the teacher;
- the frozen teacher's final hidden states for the micro-batch (distillation);
- one sampling batch of the hf engine, as evaluation's below (`rollout.prompts_per_batch` prompts
  within `rollout.max_batch_tokens` positions, or the rank's whole share of the step): its KV cache
  (2 x layers x kv heads x head dim per position) and a decode step's logits; with
  `rollout.engine: vllm`, the share of the GPU vLLM takes. Under ZeRO-3 the built-in sampler
  gathers the sampling model's whole weights once per rollout (ranks decode different lengths, so
  they cannot gather layer by layer together), which a 70B teacher's 131 GiB in bf16 makes the
  bound of its stage.
Bf16 activations are counted at 2 bytes an element; that is an estimate, measured only in float32.

After a stage, every node is evaluated and distillation nodes are diagnosed (C2); the trainer's
states are gone by then, so these phases hold the models they read and one sampling batch:
- evaluation of a benchmark (`eval_bytes`): the model's weights, and the hf engine's largest batch
  (`sample_batch`: eval.prompts_per_batch problems within eval.max_batch_tokens, at least one): the
  shared-prefix KV cache (the prompts once, k samples each of up to max_new_tokens positions, grown
  by doubling from 256, the old buffer held beside the new while it copies) and one decode step's logits;
- C2 (`c2_bytes`): the teacher and one student, sampling as evaluation does, then scoring each
  batch: both models' final hidden states (and the completion positions' copies the loss takes),
  one decoder layer's transient tensors (no autograd: 3 x intermediate + 4 x hidden a token), SDPA's
  padded attention mask (sequences x length x length) and one chunk of logits.
`benchmarks/phase_memory.py` measures both phases against these estimates on the CPU, and
`benchmarks/run_memory.py` every phase of a whole run (`phase_growth`: what each adds to the memory
at its start, as phasemem.py measures it).
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 2**30


@dataclass(frozen=True)
class Precision:
    weights: int  # bytes per parameter
    grads: int
    optimizer: int
    step: int = 0  # a transient of the optimizer's step: torch's foreach AdamW takes sqrt(v) into a new fp32 copy


BF16_MIXED = Precision(2, 2, 12)  # DeepSpeed's fused Adam steps in place
FP32 = Precision(4, 4, 8, 4)
PRECISIONS = {"bf16-mixed": BF16_MIXED, "fp32": FP32}


@dataclass(frozen=True)
class Shape:
    """What the activation and KV-cache estimates read from a decoder's config."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int

    @classmethod
    def of(cls, config) -> "Shape":  # noqa: ANN001 - a transformers PretrainedConfig
        heads = config.num_attention_heads
        return cls(config.num_hidden_layers, config.hidden_size, config.intermediate_size, heads,
                   getattr(config, "num_key_value_heads", None) or heads, getattr(config, "head_dim", None) or config.hidden_size // heads,
                   config.vocab_size)

    def layer_elements(self) -> float:
        """Elements autograd keeps per token in one decoder layer (see the module docstring)."""
        return 6 * self.hidden + 4 * self.intermediate + 4 * (self.heads + self.kv_heads) * self.head_dim + 2 * self.heads + 4

    def kv_bytes(self, itemsize: int) -> float:
        """KV-cache bytes per cached position."""
        return 2 * self.layers * self.kv_heads * self.head_dim * itemsize


@dataclass(frozen=True)
class StageShape:
    """One stage's sizes on one rank: what its memory depends on."""

    sequences: int  # sequences the rank trains on per step (its share of prompts x samples)
    samples: int  # samples per prompt (k)
    prompt_tokens: int
    new_tokens: int
    micro_batch: int  # sequences per forward/backward (0: all)
    checkpointing: bool
    chunk: int  # logits chunk (0: every completion position at once)
    kv_budget: int  # rollout.max_batch_tokens (0: unbounded)
    reference: bool = False  # GRPO's KL anchor (kl_coef > 0): a frozen copy of the trained model's weights
    per_batch: int = 0  # rollout.prompts_per_batch (0: the rank's whole share at once)


def training_bytes(trained: Shape, teacher: Shape | None, st: StageShape, itemsize: int) -> dict[str, float]:
    """One micro-batch's activations, logits chunk and teacher hidden states, in bytes."""
    b = st.micro_batch or st.sequences
    tokens = b * (st.prompt_tokens + st.new_tokens)
    per_layer = trained.layer_elements() * tokens * itemsize
    if st.checkpointing:  # layer inputs kept, one layer's activations live while it is recomputed
        activations = trained.layers * trained.hidden * tokens * itemsize + per_layer
    else:
        activations = trained.layers * per_layer
    activations += 2 * trained.hidden * tokens * itemsize  # embeddings and the final norm
    # SDPA's mask of a padded batch (rollouts always are): b x T x T in the model's dtype, built once and kept by every
    # layer's backward (without checkpointing) or by the one recomputed layer (measured: benchmarks/memory_model.py)
    length = st.prompt_tokens + st.new_tokens
    activations += (2 if st.checkpointing else trained.layers + 1) * b * length * length * itemsize
    positions = min(st.chunk, b * st.new_tokens) if st.chunk else b * st.new_tokens  # a chunk never outgrows the micro-batch
    logits = positions * trained.vocab * 4 * (4 + (2 if teacher is not None else 0))
    kept = b * st.new_tokens * teacher.hidden * itemsize if teacher is not None else 0.0
    return {"activations": activations, "logits": logits, "teacher_hidden": kept}


def rollout_bytes(sampler: Shape, st: StageShape, itemsize: int) -> float:
    """The largest sampling batch of a step's rollouts: the hf engine samples them as it samples an evaluation, in
    batches of rollout.prompts_per_batch prompts within rollout.max_batch_tokens positions."""
    b = sample_batch(st.sequences // st.samples, st.per_batch, st.samples, st.prompt_tokens, st.new_tokens, st.kv_budget)
    return _sampling_bytes(sampler, b, st.samples, st.prompt_tokens, st.new_tokens, itemsize)


def deepspeed_layout(ds, world: int) -> dict:  # noqa: ANN001 - a config.DeepSpeedConfig
    """How DeepSpeed holds the states (its backend's `memory_layout`), from the config alone."""
    return {"precision": "bf16-mixed" if ds.bf16 else "fp32", "zero_stage": ds.zero_stage, "world": world,
            "offload_optimizer": ds.offload_optimizer, "offload_params": ds.offload_params, "teacher_zero3": ds.teacher_zero3}


def params_of(config) -> int:  # noqa: ANN001 - a transformers PretrainedConfig
    """Parameters of the causal LM a config describes, built on the meta device (no weights; tied ones once)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def trained_parts(params: int, p: Precision, zero: int, world: int, offload_optimizer: bool, offload_params: bool) -> dict[str, float]:
    """Bytes per rank of a trained model's weights, gradients and optimizer states on the device (0 where offloaded),
    and on the host."""
    weights = params * p.weights / (world if zero >= 3 else 1)
    optimizer = params * p.optimizer / (world if zero >= 1 else 1)
    return {"weights": 0.0 if offload_params else weights, "grads": params * p.grads / (world if zero >= 2 else 1),
            "optimizer": 0.0 if offload_optimizer else optimizer,
            "step": 0.0 if offload_optimizer else params * p.step / (world if zero >= 1 else 1),
            "host": (optimizer if offload_optimizer else 0.0) + (weights if offload_params else 0.0)}


def trained_bytes(params: int, p: Precision, zero: int, world: int, offload_optimizer: bool, offload_params: bool) -> tuple[float, float]:
    """(device, host) bytes per rank of a trained model's states."""
    parts = trained_parts(params, p, zero, world, offload_optimizer, offload_params)
    return parts["weights"] + parts["grads"] + parts["optimizer"], parts["host"]


def frozen_bytes(params: int, p: Precision, sharded: bool, world: int) -> float:
    return params * p.weights / (world if sharded else 1)


def stage_estimate(stage: str, trains: str, params: dict[str, int], shapes: dict[str, Shape], st: StageShape, sampler: str | None,
                   needs_teacher: bool, p: Precision, layout: dict, vllm_gib: float | None = None) -> dict:
    """One stage's memory per rank in GiB: model states, then the larger of sampling and the update. `needs_teacher`:
    the teacher is resident (not when it is served); `sampler` None: the rollouts are sampled elsewhere (a served teacher)."""
    parts = trained_parts(params[trains], p, layout["zero_stage"], layout["world"], layout["offload_optimizer"], layout["offload_params"])
    device, host = parts["weights"] + parts["grads"] + parts["optimizer"], parts["host"]
    if needs_teacher:
        device += frozen_bytes(params["teacher"], p, layout["teacher_zero3"], layout["world"])
    reference = frozen_bytes(params[trains], p, layout["zero_stage"] >= 3, layout["world"]) if st.reference else 0.0
    device += reference  # built in the weights' precision, partitioned under ZeRO-3 (backends' `reference`)
    itemsize = p.weights
    if sampler is None:  # a served teacher samples on its server: nothing here
        rollout = 0.0
    else:
        rollout = vllm_gib * GIB if vllm_gib is not None else rollout_bytes(shapes[sampler], st, itemsize)
    sharded = layout["teacher_zero3"] if sampler == "teacher" and trains != "teacher" else layout["zero_stage"] >= 3
    gathered = params[sampler] * p.weights * (1 - 1 / layout["world"]) if sampler is not None and vllm_gib is None and sharded else 0.0
    rollout += gathered  # the built-in sampler gathers a ZeRO-3 model's whole weights once per rollout
    train = training_bytes(shapes[trains], shapes["teacher"] if needs_teacher else None, st, itemsize)
    peak = max(rollout, sum(train.values()))
    return {"stage": stage, "trains": trains, "params": params[trains], "states_gib": device / GIB, "reference_gib": reference / GIB,
            "rollout_gib": rollout / GIB, "gathered_gib": gathered / GIB,
            **{f"{k}_gib": v / GIB for k, v in train.items()}, "device_gib": (device + peak) / GIB, "host_gib": host / GIB,
            "micro_batch": st.micro_batch or st.sequences, "sequences": st.sequences, "checkpointing": st.checkpointing,
            "grads_gib": parts["grads"] / GIB, "optimizer_gib": parts["optimizer"] / GIB, "step_gib": parts["step"] / GIB}


# Stages a backend samples whole before training, holding every step's rollouts on the host: TRL's warmup
# (trl_backend._teacher_rollouts: rows of text and token ids, then a datasets.Dataset of them). Measured 129 to 143
# bytes a token at the peak (Python lists of ids, the texts, the Dataset; 2,000 and 8,000 rows of 1,000 tokens).
HOST_ROLLOUTS = {("trl", "warmup")}
HOST_ROLLOUT_BYTES_PER_TOKEN = 144


def host_rollout_bytes(sequences: int, prompt_tokens: int, new_tokens: int) -> float:
    """Host bytes of a stage's rollouts held whole (HOST_ROLLOUTS): steps x step sequences of prompt + completion."""
    return sequences * (prompt_tokens + new_tokens) * HOST_ROLLOUT_BYTES_PER_TOKEN


def update_work(row: dict) -> float:
    """One micro-batch's training memory in GiB (stage_estimate's `row`): activations, logits chunk, teacher hidden states."""
    return row["activations_gib"] + row["logits_gib"] + row["teacher_hidden_gib"]


def phase_growth(row: dict) -> dict[str, float]:
    """What each of a stage's phases adds to the memory at its start, in GiB (stage_estimate's `row`): what
    phasemem.py measures. Sampling adds its batch; an update its gradients (freed after each step), then the larger
    of the micro-batch's activations and the optimizer's step once they are gone: at the first step AdamW makes its
    states, and torch's foreach AdamW one more fp32 copy while it steps (measured: benchmarks/run_memory.py); GRPO's
    reference copy its weights."""
    growth = {"rollout": row["rollout_gib"],
              "update": row["grads_gib"] + max(update_work(row), row["optimizer_gib"] + row["step_gib"])}
    if row["reference_gib"]:
        growth["reference"] = row["reference_gib"]
    return growth


def sample_batch(share: int, per_batch: int, samples: int, prompt_tokens: int, new_tokens: int, kv_budget: int) -> int:
    """Problems in the largest batch the hf engine samples (generation.hf.HFEngine._batches): `per_batch` of the
    rank's `share` (0: all), within `kv_budget` positions of samples x (prompt + new tokens) each, never none."""
    b = min(share, per_batch or share)
    if kv_budget:
        b = min(b, kv_budget // (samples * (prompt_tokens + new_tokens)))
    return max(b, 1)


def generated_positions(new_tokens: int, initial: int = 256) -> int:
    """Positions per sample the shared-prefix cache holds at its peak (generation/shared_prefix.py's SharedPrefixLayer):
    it starts at `initial` and doubles up to new_tokens, holding the old buffer beside the new one while it copies."""
    size = peak = min(new_tokens, initial)
    while size < new_tokens:
        grown = min(new_tokens, 2 * size)
        peak, size = max(peak, size + grown), grown
    return peak


def _sampling_bytes(model: Shape, b: int, samples: int, prompt_tokens: int, new_tokens: int, itemsize: int) -> float:
    """One hf sampling batch of `b` problems: the shared-prefix KV cache at its largest (the prompts once, the samples'
    buffer while it grows; generation/shared_prefix.py) and one decode step's logits (float32, and the sampler's
    float64 cumulative distribution). The prefill holds the prompts' keys twice for a moment (the forward's and the
    cache's padding-zeroed copy) beside the samples' first buffer: b x prompt_tokens positions more than counted here
    while max_new_tokens <= 256, where the whole batch is small; not measured on a GPU (the CPU's resident set sees
    only the buffer's written pages: benchmarks/run_memory.py)."""
    kv = (b * prompt_tokens + b * samples * generated_positions(new_tokens)) * model.kv_bytes(itemsize)
    return kv + b * samples * model.vocab * (4 + 8)


def eval_bytes(model: Shape, params: int, b: int, samples: int, prompt_tokens: int, new_tokens: int, itemsize: int) -> dict[str, float]:
    """Evaluating one benchmark on one rank: the model's weights and its largest sampling batch."""
    return {"weights": params * itemsize, "work": _sampling_bytes(model, b, samples, prompt_tokens, new_tokens, itemsize)}


def c2_bytes(teacher: Shape | None, student: Shape, params: dict[str, int], b: int, samples: int, prompt_tokens: int, new_tokens: int,
             chunk: int, itemsize: int) -> dict[str, float]:
    """C2 around one distillation node: teacher and one student held, the larger of sampling and scoring a batch."""
    here = [m for m in (teacher, student) if m is not None]  # a served teacher (None) samples and scores on its server
    sampling = max(_sampling_bytes(s, b, samples, prompt_tokens, new_tokens, itemsize) for s in here)
    n, length = b * samples, prompt_tokens + new_tokens
    big = max(here, key=lambda s: s.layer_elements())
    both = sum(m.hidden for m in here)  # hidden states, then their completion positions copied out for the loss
    scoring = (n * length * (both + 3 * big.intermediate + 4 * big.hidden + length) + n * new_tokens * both) * itemsize
    positions = min(chunk, n * new_tokens) if chunk else n * new_tokens
    scoring += positions * max(m.vocab for m in here) * 4 * (6 if teacher is not None else 2)  # fp32 logits etc.: both heads', or one
    weights = (params["student"] + (params["teacher"] if teacher is not None else 0)) * itemsize
    return {"weights": weights, "work": max(sampling, scoring), "sampling": sampling, "scoring": scoring}


def render(report: dict) -> str:
    """The preflight table printed before the first stage."""
    p = report["params"]
    memory = f"{report['device_memory_gib']:.0f} GiB" if report.get("device_memory_gib") else "not known (set preflight.device_memory_gb)"
    teacher = f"teacher served at {report['served_teacher']}" if report.get("served_teacher") else f"teacher {p['teacher'] / 1e6:,.1f}M params"
    lines = [f"preflight: {teacher}, student {p['student'] / 1e6:,.1f}M params; "
             f"backend {report['backend']}, {report['precision']}, ZeRO-{report['zero_stage']}, {report['world']} rank(s); device memory {memory}",
             "  memory per rank, GiB: states (GRPO's reference model, ref, included) + max(rollout KV, activations + logits + "
             "teacher hidden) = device",
             "    stage       trains    micro   states      ref  rollout    activ   logits  t.hidden   device     host"]
    for r in report["stages"]:
        lines.append(f"    {r['stage']:<11} {r['trains']:<8} {r['micro_batch']:>6} {r['states_gib']:8.2f} {r['reference_gib']:8.2f} {r['rollout_gib']:8.2f} "
                     f"{r['activations_gib']:8.2f} {r['logits_gib']:8.2f} {r['teacher_hidden_gib']:9.2f} {r['device_gib']:8.2f} {r['host_gib']:8.2f}")
    if report.get("phases"):
        lines += ["  after each stage, per rank, GiB: weights + largest batch (sampling, or C2's scoring) = device",
                  "    phase                      model     batch  weights    batch   device"]
        for r in report["phases"]:
            lines.append(f"    {r['phase']:<26} {r['model']:<8} {r['batch']:>6} {r['weights_gib']:8.2f} {r['work_gib']:8.2f} {r['device_gib']:8.2f}")
    if report.get("nodes"):
        lines += ["  every node's phases, per rank, GiB on the device while each runs (eval: its largest benchmark; -: not run)",
                  "    node                         rollout   update      ref     eval       c2"]
        for r in report["nodes"]:
            ph = r["phases"]
            evals = [v["device_gib"] for k, v in ph.items() if k.startswith("eval ")]
            cells = [ph[k]["device_gib"] if k in ph else None for k in ("rollout", "update", "reference")]
            cells += [max(evals) if evals else None, ph["c2"]["device_gib"] if "c2" in ph else None]
            lines.append(f"    {r['node']:<28}" + "".join(f"{c:9.2f}" if c is not None else f"{'-':>9}" for c in cells))
    return "\n".join(lines)
