"""Training backends: one Protocol (base.py), registered implementations."""

from s2d_bench.registry import Registry

BACKENDS: Registry = Registry("backend")
BACKENDS.register("torch", "s2d_bench.backends.torch_backend:TorchBackend", "plain PyTorch loops; CPU or one GPU")
BACKENDS.register("trl", "s2d_bench.backends.trl_backend:TRLBackend", "TRL trainers: GRPOTrainer, GKD (forward KL), DistillationTrainer", extra="trl")
BACKENDS.register("deepspeed", "s2d_bench.backends.deepspeed_backend:DeepSpeedBackend", "the torch loops on DeepSpeed engines: ZeRO 0-3, CPU offload, multi-process", extra="deepspeed")

