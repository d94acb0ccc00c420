"""The `hf` engine: the s2d-bench KV-cache sampler on a transformers model, for evaluation and rollouts.

Evaluation loads a model from a path (`HFEngine.load`); a training stage wraps the live module it
trains (`HFEngine.live`), so rollouts always see the current weights and there is nothing to sync.
Either way prompts are rendered by `protocol.render`, samples stop at `protocol.stop_ids`, and the
k samples of a prompt read one prompt cache (shared-prefix decoding, shared_prefix.py). Prompts
are sorted by length into batches of `prompts_per_batch`, bounded by `max_batch_tokens` KV-cache
positions (so a stage's rollout memory does not grow with its batch), and finished prompts leave a
batch as it decodes (sampling.py); since every prompt samples from its own seed, neither changes a
token.

`hf-compiled` is the same engine with the decode loop of static_decode.py: a static-shape KV cache and
a `torch.compile`d decode step (CUDA graphs on a GPU), the same tokens up to float rounding. It pays a
compilation per process and batch shape (10-35 s on this CPU, 16-51 s for Qwen3-1.7B on an H200) for
steps 13x faster on that GPU; on the CPU, with long prompts copied k times, it evaluated 7x slower than hf
(README), so it is for GPUs.
"""

from __future__ import annotations

from typing import Iterator

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from s2d_bench.config import RolloutConfig
from s2d_bench.generation.engine import Completion, EngineConfig, Progress, resolve_device, resolve_dtype
from s2d_bench.generation.protocol import check_context, completion_texts, context_of, render, stop_ids
from s2d_bench.generation.rollouts import Rollouts, rollouts_from_tokens
from s2d_bench.generation.sampling import Sampling, sample
from s2d_bench.generation.static_decode import sample_static
from s2d_bench.models.builders import load_pretrained
from s2d_bench.models.sequences import left_pad


class HFEngine:
    """The harness's sampler over an in-memory transformers model."""

    decode = staticmethod(sample)  # the decode loop (sampling.sample's contract): eager, shared-prefix cache, eviction

    def __init__(self, model: PreTrainedModel, tok: PreTrainedTokenizerBase, cfg: EngineConfig = EngineConfig()) -> None:
        self.model, self.tok, self.cfg = model, tok, cfg
        self.eos_ids = stop_ids(model, tok)

    @classmethod
    def load(cls, ref: str, cfg: EngineConfig = EngineConfig()) -> "HFEngine":
        """Evaluation: weights from a local directory or hub id."""
        device = resolve_device(cfg.device)
        model, tok = load_pretrained(ref, device, resolve_dtype(cfg.dtype, device))
        return cls(model, tok, cfg)

    @classmethod
    def live(cls, model: PreTrainedModel, tok: PreTrainedTokenizerBase, cfg: RolloutConfig, thinking: bool, trained: bool) -> "HFEngine":
        """Rollouts: the module itself, trained or frozen; its weights are read at every call."""
        return cls(model, tok, EngineConfig(prompts_per_batch=cfg.prompts_per_batch, max_batch_tokens=cfg.max_batch_tokens, thinking=thinking))

    def generate(self, prompts: list[str], sampling: Sampling, seeds: list[int], progress: Progress | None = None) -> list[Completion]:
        """len(prompts) * k completions; entry i * k + j is sample j of prompt i, drawn from seeds[i]."""
        return self.generate_ids(render(self.tok, prompts, self.cfg.thinking), sampling, seeds, progress)

    def generate_ids(self, rows: list[list[int]], sampling: Sampling, seeds: list[int], progress: Progress | None = None) -> list[Completion]:
        """As `generate`, for prompts already templated and tokenized (lm-eval's contexts)."""
        tokens = self._sample(rows, sampling, seeds, progress)
        texts = completion_texts(self.tok, tokens)
        return [Completion(text, len(ids), ids) for text, ids in zip(texts, tokens)]

    def rollouts(self, prompts: list[str], sampling: Sampling, seeds: list[int]) -> Rollouts:
        """k samples per prompt from the model as it is now, laid out for training."""
        rows = render(self.tok, prompts, self.cfg.thinking)
        return rollouts_from_tokens(self.tok, rows, sampling.k, self._sample(rows, sampling, seeds, None))

    def batches(self, prompts: list[str], sampling: Sampling) -> list[list[int]]:
        """The prompt indices this engine samples together (`_batches`), for a caller that must also score each batch
        within the same bound (the C2 diagnostics)."""
        return list(self._batches(render(self.tok, prompts, self.cfg.thinking), sampling))

    def check_prompts(self, prompts: list[str], names: list[str], max_new_tokens: int) -> None:
        check_context(self.tok, prompts, names, self.cfg.thinking, context_of(self.model.config), max_new_tokens)

    def close(self) -> None:
        return None

    def _sample(self, rows: list[list[int]], sampling: Sampling, seeds: list[int], progress: Progress | None) -> list[list[int]]:
        """Token ids of every sample (up to and including its stop token), prompt-major."""
        if len(seeds) != len(rows):
            raise ValueError(f"{len(seeds)} seeds for {len(rows)} prompts: one seed per prompt")
        out: list[list[list[int]]] = [[] for _ in rows]
        for chunk in self._batches(rows, sampling):
            ids, mask = left_pad([rows[i] for i in chunk], self.tok.pad_token_id)
            device = self.model.device
            tokens, alive = self.decode(self.model, ids.to(device), mask.to(device), sampling, self.eos_ids, self.tok.pad_token_id,
                                   [seeds[i] for i in chunk], len(self.tok))
            lengths = alive.sum(1).long().tolist()
            tokens = tokens.cpu().tolist()
            for n, i in enumerate(chunk):
                out[i] = [tokens[n * sampling.k + j][: lengths[n * sampling.k + j]] for j in range(sampling.k)]
            if progress is not None:
                progress(len(chunk) * sampling.k)
        return [c for per_prompt in out for c in per_prompt]

    def _batches(self, rows: list[list[int]], sampling: Sampling) -> Iterator[list[int]]:
        """Prompt indices in batches of similar length: at most `prompts_per_batch` (0: any number) and, with
        `max_batch_tokens`, at most that many KV-cache positions, k x (longest prompt + max_new_tokens) per prompt;
        a prompt over the bound gets a batch of its own. Prompts sample from their own seeds, so no token changes."""
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
        cap = self.cfg.prompts_per_batch or max(len(order), 1)
        batch: list[int] = []
        for i in order:  # ascending length: prompt i is the longest of the batch it joins
            cost = (len(batch) + 1) * sampling.k * (len(rows[i]) + sampling.max_new_tokens)
            if batch and (len(batch) == cap or (self.cfg.max_batch_tokens and cost > self.cfg.max_batch_tokens)):
                yield batch
                batch = []
            batch.append(i)
        if batch:
            yield batch


class CompiledHFEngine(HFEngine):
    """`hf-compiled`: the hf engine with a static-shape cache and a compiled decode step (static_decode.py)."""

    decode = staticmethod(sample_static)
