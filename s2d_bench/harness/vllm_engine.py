"""The vLLM engine (extra `vllm`): `n=k` samples per prompt, tensor parallel across GPUs."""

from __future__ import annotations

from vllm import LLM, SamplingParams

from s2d_bench.harness.engines import Completion, EngineConfig, Progress
from s2d_bench.harness.sampling import Sampling


def sampling_params(sampling: Sampling, seed: int, **extra) -> SamplingParams:
    """Our `Sampling` in vLLM's terms (top_k 0, ours for off, is vLLM's -1)."""
    return SamplingParams(
        n=sampling.k,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        top_k=sampling.top_k if sampling.top_k > 0 else -1,
        max_tokens=sampling.max_new_tokens,
        seed=seed,
        **extra,
    )


class VLLMEngine:
    def __init__(self, llm: LLM, cfg: EngineConfig = EngineConfig()) -> None:
        self.llm, self.cfg = llm, cfg

    @classmethod
    def load(cls, ref: str, cfg: EngineConfig = EngineConfig()) -> "VLLMEngine":
        dtype = "auto" if cfg.dtype == "auto" else cfg.dtype
        return cls(LLM(model=ref, tensor_parallel_size=cfg.tensor_parallel_size, dtype=dtype), cfg)

    def generate(self, prompts: list[str], sampling: Sampling, seed: int, progress: Progress | None = None) -> list[Completion]:
        params = sampling_params(sampling, seed)
        chats = [[{"role": "user", "content": p}] for p in prompts]
        outputs = self.llm.chat(chats, params, chat_template_kwargs={"enable_thinking": self.cfg.thinking}, use_tqdm=progress is None)
        if progress is not None:
            progress(len(prompts) * sampling.k)
        return [Completion(o.text, len(o.token_ids)) for out in outputs for o in out.outputs]
