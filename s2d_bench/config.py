"""Typed run configuration: dataclasses, YAML loading and `key.sub=value` overrides.

Every field carries its help text. Unknown keys are an error with a "did you mean", values are
coerced to the field's type (`typed.py`: plain data to dataclasses), and each dataclass validates
itself in `__post_init__` with a message that names the fix. No interpolation, no defaults lists:
what the YAML says is what runs.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from importlib.resources.abc import Traversable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from s2d_bench import estimators
from s2d_bench.configfile import ROLES, from_folder, pretrain_beside_path, read_yaml, refuse_ignored_blocks
from s2d_bench.errors import UserError
from s2d_bench.slurm_config import SlurmConfig
from s2d_bench.typed import from_dict, help_field as _help, parse_override, require, set_path, to_dict

DEFAULT_CONFIG = "tiny"


def shipped_configs() -> dict[str, Traversable]:
    """The configs the package ships (package data `s2d_bench/configs/*.yaml`), by name.

    Found through `importlib.resources`, not relative to a source tree, so a wheel installed
    anywhere has them; `s2d-bench ls` lists them and `--config NAME` loads one."""
    folder = resources.files("s2d_bench") / "configs"
    entries = [entry for entry in folder.iterdir() if entry.name.endswith(".yaml")]
    return {entry.name.removesuffix(".yaml"): entry for entry in sorted(entries, key=lambda e: e.name.removesuffix(".yaml"))}


MAX_TEMPERATURE = 2.0  # vLLM's SamplingParams refuses more; one limit keeps every engine's protocol the same


def _extraction(value: str | None, where: str) -> None:
    from s2d_bench.tasks.base import EXTRACTIONS

    require(value is None or value in EXTRACTIONS, f"{where} '{value}': use {' or '.join(EXTRACTIONS)}")


def _temperature(value: float | None, where: str, greedy: bool = True) -> None:
    """Sampling temperatures are in [0, 2] ((0, 2] where training divides by it): vLLM refuses others."""
    low_ok = value is None or (value >= 0 if greedy else value > 0)
    require(low_ok and (value is None or value <= MAX_TEMPERATURE),
             f"{where} must be in {'[0' if greedy else '(0'}, {MAX_TEMPERATURE:g}], got {value}" + (" (0 is greedy)" if greedy else ""))


@dataclass
class TaskConfig:
    name: str = _help("registered task that supplies labeled/unlabeled/test prompts", "add3mix")
    seed: int = _help("seed of the generated world: splits and pretraining corpus", 0)
    n_labeled: int = _help("labeled prompts: the scarce resource of stage 1, stage 3, baseline", 256)
    n_unlabeled: int = _help("unlabeled prompts the dense bridge samples from", 20000)
    n_test: int = _help("held-out problems every evaluation uses", 200)
    max_digits: int = _help("operands have 1..max_digits digits", 3)
    pretrain_correct_prob: float = _help("share of pretraining examples with the right answer", 0.35)
    train_data: str = _help("task 'math': JSON Lines file or hub dataset id of training problems (fields problem, answer)", "")
    test_benchmark: str = _help("task 'math': registered benchmark that is the task's held-out split (eval 'task' entries, C2 prompts)", "math500")
    data_dir: str = _help("folder holding benchmarks' JSON Lines files (task 'math' and eval.benchmarks); empty: $S2D_DATA_DIR, else the hub", "")

    def __post_init__(self) -> None:
        require(self.n_labeled > 0 and self.n_test > 0, "task.n_labeled and task.n_test must be > 0")
        require(self.n_unlabeled > 0, "task.n_unlabeled must be > 0: the bridge needs prompts")
        require(0.0 <= self.pretrain_correct_prob <= 1.0, "task.pretrain_correct_prob is in [0, 1]")
        require(1 <= self.max_digits <= 6, "task.max_digits must be between 1 and 6")


@dataclass
class PretrainConfig:
    steps: int = _help("next-token steps on the noisy corpus; 0 keeps the model as built", 400)
    batch_size: int = _help("sequences per step", 128)
    lr: float = _help("AdamW learning rate", 1e-3)

    def __post_init__(self) -> None:
        require(self.steps >= 0 and self.batch_size > 0 and self.lr > 0, "pretrain: steps >= 0, batch_size > 0, lr > 0")


@dataclass
class HTTPConfig:
    timeout_s: float = _help("seconds a request to the server may take before it is tried again", 300.0)
    retries: int = _help("tries after the first on a dropped connection, a timeout or a 5xx answer, with backoff 1, 2, 4 ... s", 5)
    concurrency: int = _help("requests in flight at once (one prompt each: vLLM takes one seed a request)", 16)

    def __post_init__(self) -> None:
        require(self.timeout_s > 0 and self.retries >= 0 and self.concurrency >= 1,
                "teacher.http: timeout_s > 0, retries >= 0, concurrency >= 1")


@dataclass
class ModelConfig:
    builder: str = _help("named model builder (s2d-bench ls); ignored when path is set", "")
    path: str = _help("local HF directory or hub id; used as is, without pretraining", "")
    server: str = _help("teacher only: URL of a server speaking vLLM's completions API (`vllm serve MODEL --max-logprobs K`, or "
                        "`s2d-bench serve MODEL`) that serves the teacher; it is never loaded here. The distillation stages "
                        "train on its top-k and sampled-token log-probs (estimator topk or sampled)", "")
    served_model: str = _help("with server: the name the server serves the teacher as (vllm serve's MODEL, or --served-model-name); "
                              "it is the teacher's identity in node ids and the teacher cache, so serve other weights under another name", "")
    http: HTTPConfig = _help("with server: timeouts, retries and concurrency of the requests", factory=HTTPConfig)
    pretrain: PretrainConfig = _help("pretraining of a built model on the task's corpus", factory=PretrainConfig)

    def __post_init__(self) -> None:
        require(sum(map(bool, (self.builder, self.path, self.server))) == 1,
                "set exactly one of builder (a named model built and pretrained here), path (a saved model) and server (a served teacher)")
        require(not self.server or bool(self.served_model),
                "server: set served_model too, the name the server serves the teacher as (GET /v1/models lists it)")
        require(not self.server or self.server.startswith(("http://", "https://")), f"server '{self.server}': give an http:// or https:// URL")


@dataclass
class GRPOConfig:
    steps: int = _help("policy updates", 60)
    prompts_per_step: int = _help("labeled prompts drawn per step (groups)", 32)
    samples_per_prompt: int = _help("group size k; advantages are normalised within a group", 8)
    lr: float = _help("AdamW learning rate", 2e-4)
    clip_low: float = _help("ratio clip below: 1 - clip_low", 0.2)
    clip_high: float = _help("ratio clip above: 1 + clip_high (DAPO uses 0.28)", 0.2)
    kl_coef: float = _help("weight of the k3 KL to the stage's initial policy; 0 is off", 0.0)
    scale_rewards: bool = _help("divide advantages by the group std (Dr. GRPO: false)", True)
    updates_per_batch: int = _help("passes over each batch of rollouts (PPO epochs); steps counts rollout batches", 1)
    mini_batches: int = _help("optimizer steps per pass: the batch split into this many mini-batches (verl's ppo_mini_batch)", 1)
    temperature: float = _help("rollout sampling temperature", 1.0)
    max_new_tokens: int = _help("completion length cap", 16)
    max_grad_norm: float = _help("gradient clipping norm", 1.0)
    chunk_size: int = _help("completion positions whose full-vocabulary logits exist at once (memory); 0: all", 1024)
    micro_batch_size: int = _help("sequences per forward/backward on one rank, gradients accumulated over a step (memory); 0: all", 0)
    gradient_checkpointing: bool = _help("recompute layer activations in backward instead of keeping them (memory for ~1/3 more compute)", False)

    def __post_init__(self) -> None:
        require(self.chunk_size >= 0, "GRPO: chunk_size must be >= 0")
        require(self.micro_batch_size >= 0, "GRPO: micro_batch_size must be >= 0 (0: a rank's whole batch at once)")
        require(self.max_new_tokens >= 1, "GRPO: max_new_tokens must be >= 1")
        require(self.samples_per_prompt >= 2, "GRPO needs samples_per_prompt >= 2: advantages compare samples within a group")
        require(self.steps >= 0 and self.prompts_per_step > 0, "GRPO: steps >= 0 and prompts_per_step > 0")
        require(self.lr > 0, "GRPO: lr must be > 0")
        _temperature(self.temperature, "GRPO: temperature", greedy=False)
        require(self.clip_low >= 0 and self.clip_high >= 0, "GRPO: clip_low and clip_high must be >= 0")
        require(self.updates_per_batch >= 1 and self.kl_coef >= 0, "GRPO: updates_per_batch >= 1, kl_coef >= 0")
        require(1 <= self.mini_batches <= self.prompts_per_step * self.samples_per_prompt,
                 "GRPO: mini_batches must be between 1 and the step's prompts_per_step x samples_per_prompt sequences")

    @property
    def step_prompts(self) -> int:
        return self.prompts_per_step

    @property
    def step_sequences(self) -> int:
        """Sequences in one step, over all ranks: a group of samples_per_prompt per prompt."""
        return self.prompts_per_step * self.samples_per_prompt

    @property
    def step_mini_batches(self) -> int:
        return self.mini_batches


@dataclass
class DistillConfig:
    steps: int = _help("optimizer steps", 250)
    batch_size: int = _help("prompts per step, one completion each", 128)
    lr: float = _help("AdamW learning rate", 1e-3)
    temperature: float = _help("rollout sampling temperature", 1.0)
    max_new_tokens: int = _help("completion length cap", 16)
    max_grad_norm: float = _help("gradient clipping norm", 1.0)
    estimator: str = _help(estimators.described(), "full")
    top_k: int = _help("teacher tokens kept per position by estimator 'topk'", 64)
    chunk_size: int = _help("completion positions whose full-vocabulary logits exist at once (memory); 0: all", 1024)
    micro_batch_size: int = _help("sequences per forward/backward on one rank, gradients accumulated over a step (memory); 0: all", 0)
    gradient_checkpointing: bool = _help("recompute layer activations in backward instead of keeping them (memory for ~1/3 more compute)", False)
    teacher_cache: bool | None = _help(
        "warmup with a served teacher: keep its rollouts and top-k log-probs in <run_dir>/teacher-cache, one content-addressed file "
        "per step's prompts and seeds, for every node that draws the same (a complete cache trains with no server); unset: the "
        "warmup does, OPD does not. OPD cannot: its samples are the student's, new at every step", None)

    def __post_init__(self) -> None:
        require(self.micro_batch_size >= 0, "distill: micro_batch_size must be >= 0 (0: a rank's whole batch at once)")
        require(self.estimator in estimators.ESTIMATORS, f"estimator must be {estimators.names()}, not '{self.estimator}'")
        require(self.top_k >= 1 and self.chunk_size >= 0, "distill: top_k >= 1 and chunk_size >= 0")
        require(self.max_new_tokens >= 1, "distill: max_new_tokens must be >= 1")
        require(self.steps >= 0 and self.batch_size > 0 and self.lr > 0, "distill: steps >= 0, batch_size > 0, lr > 0")
        _temperature(self.temperature, "distill: temperature", greedy=False)

    @property
    def step_prompts(self) -> int:
        return self.batch_size

    @property
    def step_sequences(self) -> int:
        """Sequences in one step, over all ranks: one completion per prompt."""
        return self.batch_size

    @property
    def step_mini_batches(self) -> int:
        return 1  # one optimizer step a step


@dataclass
class StagesConfig:
    teacher_rl: GRPOConfig = _help("stage 1: GRPO on the teacher with the labeled prompts", factory=GRPOConfig)
    warmup: DistillConfig = _help("stage 2a: forward KL(teacher || student) on teacher rollouts", factory=DistillConfig)
    opd: DistillConfig = _help("stage 2b: reverse KL(student || teacher) on student rollouts", factory=DistillConfig)
    student_rl: GRPOConfig = _help("stage 3: GRPO on the student", factory=GRPOConfig)
    replay: DistillConfig = _help(
        "control for stage 3: more on-policy distillation, no labels; `s2d-bench ablate` matches its steps to stage 3's updates",
        factory=lambda: DistillConfig(steps=120),
    )


@dataclass
class ArmConfig:
    stages: list[str] = _help("stage names in order (s2d-bench ls)", factory=list)
    overrides: dict[str, Any] = _help("'stage.field: value' changes for this arm only", factory=dict)

    def __post_init__(self) -> None:
        require(bool(self.stages), "an arm needs at least one stage")


@dataclass
class BenchmarkConfig:
    name: str = _help("registered benchmark (s2d-bench ls), or 'task': the task's own held-out split", "task")
    samples: int | None = _help("k samples per problem (avg@k); unset: the benchmark's own (task: eval.samples)", None)
    temperature: float | None = _help("sampling temperature, 0 greedy; unset: the benchmark's own (task: eval.temperature)", None)
    top_p: float | None = _help("nucleus mass; unset: the benchmark's own (task: eval.top_p)", None)
    top_k: int | None = _help("top-k sampling, 0 off; unset: the benchmark's own (task: eval.top_k)", None)
    max_new_tokens: int | None = _help("completion length cap; unset: the benchmark's own (task: eval.max_new_tokens)", None)
    limit: int | None = _help("only the first N problems; unset: all (task: its n_test)", None)
    extraction: str | None = _help("the answer a completion gives: last_box or boxes (eval.extraction); unset: the benchmark's own "
                                   "(task: eval.extraction)", None)

    def __post_init__(self) -> None:
        _extraction(self.extraction, f"eval.benchmarks {self.name}: extraction")
        require(self.samples is None or self.samples >= 1, f"eval.benchmarks {self.name}: samples must be >= 1")
        _temperature(self.temperature, f"eval.benchmarks {self.name}: temperature")
        require(self.top_p is None or 0 < self.top_p <= 1, f"eval.benchmarks {self.name}: top_p must be in (0, 1]")
        require(self.top_k is None or self.top_k >= 0, f"eval.benchmarks {self.name}: top_k must be >= 0")
        require(self.max_new_tokens is None or self.max_new_tokens >= 1, f"eval.benchmarks {self.name}: max_new_tokens must be >= 1")
        require(self.limit is None or self.limit >= 1, f"eval.benchmarks {self.name}: limit must be >= 1")


@dataclass
class EvalConfig:
    samples: int = _help("k samples per problem; the metric is avg@k", 16)
    temperature: float = _help("sampling temperature; 0 is greedy", 1.0)
    top_p: float = _help("nucleus sampling mass", 1.0)
    top_k: int = _help("sample from the k most likely tokens; 0 is off", 0)
    max_new_tokens: int = _help("completion length cap", 16)
    prompts_per_batch: int = _help("problems per generation batch (x samples sequences)", 50)
    max_batch_tokens: int = _help(
        "hf engine: KV-cache positions per sampling batch, samples x (longest prompt + max_new_tokens) per problem; 0: no "
        "bound. Memory only: problems sample from their own seeds, so every completion is the same", 0)
    engine: str = _help("registered engine that samples evaluations: hf, hf-compiled, or vllm (GPU, extra 'vllm')", "hf")
    extraction: str = _help(
        "the answer a completion gives, for the task's split: last_box (the last \\boxed{}) or boxes (the last box joined with "
        "the boxes right before it, as math-verify extracts: \\boxed{3}, \\boxed{5} answers 3, 5); registered benchmarks "
        "use boxes unless their entry sets it. Part of the protocol: records extracted differently never share a cell", "last_box")
    benchmarks: list[BenchmarkConfig] = _help(
        "what every model is evaluated on after every stage: registered benchmarks, each with its own protocol, "
        "or 'task' (the task's held-out split under the protocol above)", factory=lambda: [BenchmarkConfig()])

    def __post_init__(self) -> None:
        require(self.samples >= 1 and self.prompts_per_batch >= 1, "eval.samples and eval.prompts_per_batch must be >= 1")
        require(self.max_batch_tokens >= 0, "eval.max_batch_tokens must be >= 0 (0: no bound)")
        require(self.max_new_tokens >= 1, "eval.max_new_tokens must be >= 1")
        _extraction(self.extraction, "eval.extraction")
        _temperature(self.temperature, "eval.temperature")
        require(0 < self.top_p <= 1 and self.top_k >= 0, "eval: 0 < top_p <= 1, top_k >= 0")
        require(bool(self.benchmarks), "eval.benchmarks is empty: name at least one benchmark (or 'task')")
        names = [b.name for b in self.benchmarks]
        require(len(set(names)) == len(names), f"eval.benchmarks names a benchmark twice: {names}")


@dataclass
class PromptConfig:
    thinking: bool = _help(
        "Qwen3-style thinking mode: passed as enable_thinking to the chat template of every prompt, in training and "
        "evaluation alike (false: the paper's non-thinking protocol; templates without the flag ignore it)", False)


@dataclass
class DeepSpeedConfig:
    zero_stage: int = _help("ZeRO stage of the trained model: 0 (plain data parallel), 1 optimizer, 2 + gradients, 3 + parameters sharded", 2)
    offload_optimizer: bool = _help("keep optimizer states on the CPU (DeepSpeedCPUAdam; ZeRO >= 1)", False)
    offload_params: bool = _help("keep sharded parameters on the CPU (ZeRO 3 only)", False)
    teacher_zero3: bool = _help("shard the frozen teacher with ZeRO-3 across ranks (for a teacher that does not fit one device)", False)
    bf16: bool = _help("bf16 weights and compute with fp32 master weights in the optimizer (GPUs)", False)
    timeout_minutes: int = _help("collective timeout: ranks wait while rank 0 grades, writes and measures C2", 240)
    extra: dict[str, Any] = _help("raw DeepSpeed config keys merged over the ones s2d-bench writes", factory=dict)

    def __post_init__(self) -> None:
        require(self.zero_stage in (0, 1, 2, 3), f"deepspeed.zero_stage must be 0, 1, 2 or 3, not {self.zero_stage}")
        require(not self.offload_params or self.zero_stage == 3, "deepspeed.offload_params needs zero_stage: 3")
        require(not self.offload_optimizer or self.zero_stage >= 1, "deepspeed.offload_optimizer needs zero_stage >= 1")
        require(self.timeout_minutes > 0, "deepspeed.timeout_minutes must be > 0")


@dataclass
class RolloutConfig:
    engine: str = _help("registered rollout engine of the torch and deepspeed backends' training stages: hf, hf-compiled, or vllm (GPU, extra 'vllm')", "hf")
    gpu_memory_utilization: float = _help("vllm: share of each GPU's memory vLLM may take beside the trainer (weights + KV cache)", 0.3)
    max_model_len: int = _help("vllm: longest prompt + completion; 0 takes the model config's (large: costs KV cache)", 0)
    sleep: bool = _help("vllm: free the KV cache (and, for the trained model, the weights) between rollouts", True)
    enforce_eager: bool = _help("vllm: no CUDA graphs (slower decode, faster start, less memory)", False)
    extra: dict[str, Any] = _help("raw vllm.LLM keyword arguments merged over the ones s2d-bench passes", factory=dict)
    prompts_per_batch: int = _help("hf: prompts per sampling batch (x k sequences); 0: a step's prompts at once", 0)
    max_batch_tokens: int = _help(
        "hf: bound on a sampling batch's KV cache, k x (longest prompt + max_new_tokens) positions summed over its prompts "
        "(at least one prompt a batch); 0: no bound", 0)

    def __post_init__(self) -> None:
        require(self.prompts_per_batch >= 0, "rollout.prompts_per_batch must be >= 0 (0: all at once)")
        require(self.max_batch_tokens >= 0, "rollout.max_batch_tokens must be >= 0 (0: no bound)")
        require(0 < self.gpu_memory_utilization <= 1, "rollout.gpu_memory_utilization must be in (0, 1]")
        require(self.max_model_len >= 0, "rollout.max_model_len must be >= 0 (0: the model's own)")


@dataclass
class PreflightConfig:
    device_memory_gb: float = _help("memory of one device the estimate is checked against; 0: the CUDA device's (none on a CPU run)", 0.0)
    prompt_tokens: int = _help("longest rendered prompt the memory estimate assumes (tokens)", 512)

    def __post_init__(self) -> None:
        require(self.device_memory_gb >= 0, "preflight.device_memory_gb must be >= 0 (0: detect)")
        require(self.prompt_tokens >= 1, "preflight.prompt_tokens must be >= 1")


@dataclass
class DiagnosticsConfig:
    c2_prompts: int = _help("held-out prompts (the task's test split, first ones) per C2 measurement", 64)
    c2_samples: int = _help("C2 samples per prompt and direction (teacher samples for KL(T||S), student for KL(S||T))", 4)
    chunk_size: int = _help("completion positions per language-model-head call when C2 scores samples (0: all at once); "
                            "memory only. C2 samples in eval's batches (eval.prompts_per_batch, eval.max_batch_tokens)", 1024)

    def __post_init__(self) -> None:
        require(self.c2_prompts >= 1 and self.c2_samples >= 1, "diagnostics.c2_prompts and c2_samples must be >= 1")
        require(self.chunk_size >= 0, "diagnostics.chunk_size must be >= 0 (0: all at once)")


@dataclass
class CheckpointConfig:
    every_steps: int = _help("a training stage saves its resumable state (model, optimizer, random states, step, labeled draws) every "
                             "this many steps (0: not by count)", 0)
    every_minutes: float = _help("... and every this many minutes (0: not by time); it also saves when asked to stop (SIGUSR1: Slurm's "
                                 "signal before a time limit, or a first Ctrl-C), and a rerun continues from the last save", 30.0)

    def __post_init__(self) -> None:
        require(self.every_steps >= 0, "checkpoint.every_steps must be >= 0 (0: not by count)")
        require(self.every_minutes >= 0, "checkpoint.every_minutes must be >= 0 (0: not by time)")


def _default_arms() -> dict[str, ArmConfig]:
    return {
        "direct-grpo": ArmConfig(["student_rl"], {"student_rl.steps": 480, "student_rl.lr": 3e-4}),
        "bridge": ArmConfig(["teacher_rl", "warmup", "opd"]),
        "full": ArmConfig(["teacher_rl", "warmup", "opd", "student_rl"]),
    }


@dataclass
class RunConfig:
    name: str = _help("name of the experiment; the default run directory is runs/<name>", "tiny")
    run_dir: str = _help("where models, records and logs go; empty means runs/<name>", "")
    store: str = _help("SQLite results store shared by runs, ablations and evals; empty: $S2D_STORE, else results/s2d-bench.sqlite", "")
    seed: int = _help("seed of every stage's sampling and training (and, with seed_scope: all, of the base models)", 0)
    seed_scope: str = _help("what `seed` varies: 'stages' (every stage; base models are pretrained once per task.seed) or 'all' "
                            "(also the base models' initialisation and pretraining corpus, so intervals over seeds hold the whole chain's "
                            "variance); the task's splits stay task.seed's", "stages")
    backend: str = _help("registered training backend (s2d-bench ls)", "torch")
    device: str = _help("'cpu', 'cuda', or 'auto' (cuda when available)", "auto")
    threads: int = _help("torch CPU threads; 1 is fastest for tiny models on a shared machine", 1)
    jobs: int = _help("nodes built at once, each in its own process, e.g. one per CPU core for the tiny world; backend=deepspeed "
                      "and launched runs build one at a time (their ranks share each stage)", 1)
    teacher_process: bool = _help("torch backend on a CPU: the warmup's teacher rollouts are sampled a step ahead in a process of "
                                  "their own, with half the stage's threads (a second core), and in on-policy distillation at one thread "
                                  "that process shares the student's sampling and the teacher's forward; the numbers of a stage at the "
                                  "trainer's share of threads, the teacher held twice. Elsewhere the trainer runs the teacher", False)
    task: TaskConfig = _help("the verifiable task", factory=TaskConfig)
    teacher: ModelConfig = _help("the teacher", factory=lambda: ModelConfig(builder="tiny-qwen3-teacher"))
    student: ModelConfig = _help("the deployment student", factory=lambda: ModelConfig(builder="tiny-qwen3-student", pretrain=PretrainConfig(steps=800)))
    stages: StagesConfig = _help("default settings of each stage", factory=StagesConfig)
    arms: dict[str, ArmConfig] = _help("named stage sequences to run and compare", factory=_default_arms)
    eval: EvalConfig = _help("avg@k evaluation after every stage", factory=EvalConfig)
    deepspeed: DeepSpeedConfig = _help("engine settings of backend=deepspeed (ignored by the others)", factory=DeepSpeedConfig)
    rollout: RolloutConfig = _help("how training stages sample (evaluation: eval.engine)", factory=RolloutConfig)
    prompt: PromptConfig = _help("how problems become prompts, for training and evaluation alike", factory=PromptConfig)
    preflight: PreflightConfig = _help("the memory estimate made before any stage runs", factory=PreflightConfig)
    diagnostics: DiagnosticsConfig = _help("the C2 measurement around each distillation stage (each record keeps its counts)",
                                           factory=DiagnosticsConfig)
    report_to: list[str] = _help("where per-step metrics and evaluations also go, beside metrics.jsonl: registered reporters "
                                 "(s2d-bench ls), e.g. [tensorboard] -> <run_dir>/tb/<node>", factory=list)
    executor: str = _help("where nodes are built: local (this machine: one at a time, or `jobs` processes) or slurm (a job a node, "
                          "queued with its dependencies; see `slurm`)", "local")
    slurm: SlurmConfig = _help("the jobs of executor: slurm", factory=SlurmConfig)
    checkpoint: CheckpointConfig = _help("when a training stage saves the state it continues from after a kill, a stop or a time limit "
                                         "(same weights as an uninterrupted stage)", factory=CheckpointConfig)

    def __post_init__(self) -> None:
        require(self.executor in ("local", "slurm"), f"executor must be local or slurm, not '{self.executor}'")
        require(self.threads >= 1, "threads must be >= 1")
        require(self.jobs >= 1, "jobs must be >= 1")
        require(self.device in ("auto", "cpu", "cuda"), f"device must be auto, cpu or cuda, not '{self.device}'")
        require(self.seed_scope in ("stages", "all"), f"seed_scope must be 'stages' or 'all', not '{self.seed_scope}'")
        require(bool(self.arms), "arms is empty: name at least one arm")

    @property
    def base_seed(self) -> int:
        """The seed of the base models' initialisation and pretraining (its corpus included): task.seed's, or with
        seed_scope 'all' one derived from task.seed and seed."""
        if self.seed_scope == "stages":
            return self.task.seed
        return int.from_bytes(hashlib.sha256(f"base:{self.task.seed}:{self.seed}".encode()).digest()[:4], "little")

    @property
    def output_dir(self) -> Path:
        return Path(self.run_dir or f"runs/{self.name}")

    def stage_config(self, arm: str, stage: str) -> Any:
        """The effective config of `stage` inside `arm`: the stage default plus the arm's overrides."""
        base = to_dict(getattr(self.stages, stage))
        for key, value in self.arms[arm].overrides.items():
            owner, _, name = key.partition(".")
            if owner == stage:
                base[name] = value
        return from_dict(type(getattr(self.stages, stage)), base, f"arms.{arm}.overrides.{stage}")


def resolve_config_path(path: str | None) -> Path | Traversable:
    """A file path, or the name of a shipped config (`shipped_configs`)."""
    if path is None:
        path = DEFAULT_CONFIG
    candidate = Path(path)
    if candidate.is_file():
        return candidate
    shipped = shipped_configs()
    if path in shipped:
        return shipped[path]
    raise UserError(f"config '{path}' not found: give a YAML file path or a shipped config ({', '.join(shipped)})")


def load_config(path: str | None = None, overrides: list[str] = ()) -> RunConfig:
    """Load a YAML config (file path or shipped name) and apply `key.sub=value` overrides.

    Relative input paths in a YAML file resolve from its folder; overrides (typed in a shell) from the current one.
    Types and ranges only: registered names, arms and backend refusals are checked by
    `preflight.check_config`, which needs the registries this module must not import.
    """
    source = resolve_config_path(path)
    raw = read_yaml(source)
    if isinstance(source, Path):
        from_folder(raw, source.resolve().parent)
    written = pretrain_beside_path(raw)
    for text in overrides:
        keys, value = parse_override(text)
        set_path(raw, RunConfig, keys, value)
        if keys[0] in ROLES and keys[1:2] == ["pretrain"]:
            written.add(keys[0])
    refuse_ignored_blocks(raw, written)
    return from_dict(RunConfig, raw)
