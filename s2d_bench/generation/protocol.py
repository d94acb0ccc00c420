"""The one prompt and stop protocol: how a problem becomes prompt ids, and which tokens end a reply.

Training rollouts (every backend), the C2 diagnostics and evaluation (every engine) all call these
functions, so a model is trained and measured on the same bytes. Two details make that matter:
- Qwen3's chat template turns thinking *on* when `enable_thinking` is absent, so the flag is
  always passed, `False` unless `prompt.thinking` says otherwise (the paper's non-thinking protocol);
- a checkpoint's generation config may end turns with more tokens than the tokenizer's EOS
  (Qwen3: `<|im_end|>` and `<|endoftext|>`), so the stop set is their union, as TRL computes it.
"""

from __future__ import annotations

import hashlib
import random
from typing import Sequence, TypeVar

from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from s2d_bench.errors import UserError

T = TypeVar("T")


def render_chat(tok: PreTrainedTokenizerBase, chat: list[dict[str, str]], thinking: bool, add_generation_prompt: bool = True) -> str:
    """A conversation through the chat template, `enable_thinking=thinking` always passed (lm-eval's
    contexts come this way; `render_texts` is the one-user-turn case)."""
    return tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=add_generation_prompt, enable_thinking=thinking)


def user_turn(prompt: str) -> list[dict[str, str]]:
    """A prompt as the one user message of a conversation (TRL's trainers render it themselves: test_trl_backend)."""
    return [{"role": "user", "content": prompt}]


def render_texts(tok: PreTrainedTokenizerBase, prompts: list[str], thinking: bool) -> list[str]:
    """Each user message through the chat template, ready for the reply (strings)."""
    return [render_chat(tok, user_turn(p), thinking) for p in prompts]


def render(tok: PreTrainedTokenizerBase, prompts: list[str], thinking: bool) -> list[list[int]]:
    """Prompt token ids of each user message, chat-templated, `enable_thinking=thinking` (templates
    that do not know the flag ignore it)."""
    texts = render_texts(tok, prompts, thinking)
    return tok(texts, add_special_tokens=False)["input_ids"] if texts else []  # one call: a fast tokenizer's batch


def completion_texts(tok: PreTrainedTokenizerBase, completions) -> list[str]:  # noqa: ANN001 - id lists or a tensor
    """The text a grader sees of each completion: its ids decoded with special tokens dropped (the stop
    token, padding). Every engine and every backend's reward decodes here, so a reply is graded on the
    same text whichever path sampled it (TRL's GRPO reward included: it gets the ids, not TRL's text,
    which a tokenizer with a response schema would have parsed into fields)."""
    return tok.batch_decode(completions, skip_special_tokens=True)


def check_context(tok: PreTrainedTokenizerBase, prompts: list[str], names: list[str], thinking: bool, context: int | None,
                  max_new_tokens: int) -> None:
    """Refuse, before any sampling, a prompt that with `max_new_tokens` does not fit the model's `context`.

    Past its context a model reads positions it never trained on (a 10 MB record once became a
    13.7 GB prefill). A prompt longer than `context` times the longest token string is refused
    without tokenizing it (it cannot fit, and BPE on one huge word is slow); the rest are rendered.
    """
    if not context:
        return
    longest = max(map(len, tok.get_vocab()))
    for prompt, name in zip(prompts, names):
        size = len(render(tok, [prompt], thinking)[0]) if len(prompt) <= context * longest else None
        if size is None or size >= context:
            shown = f"{len(prompt):,} characters" if size is None else f"{size:,} tokens"
            raise UserError(f"problem {name}: its prompt ({shown}) does not fit the model's context of {context:,} tokens; "
                            "remove it from the data (or use a model with a longer context)")
        if size + max_new_tokens > context:
            raise UserError(f"problem {name}: prompt ({size:,} tokens) + max_new_tokens ({max_new_tokens:,}) exceed the model's context "
                            f"of {context:,} tokens; lower max_new_tokens to {context - size:,} or less")


def context_of(config) -> int | None:  # noqa: ANN001 - any transformers PretrainedConfig
    """The positions a model was built for (None when its config does not say)."""
    return getattr(config, "max_position_embeddings", None)


def stop_ids(model: PreTrainedModel, tok: PreTrainedTokenizerBase) -> list[int]:
    """The tokens that end a completion: the generation config's EOS ids plus the tokenizer's, sorted."""
    return stop_ids_of(model.generation_config, tok)


def stop_ids_of(config: GenerationConfig | None, tok: PreTrainedTokenizerBase) -> list[int]:
    """`stop_ids` from a generation config (an engine that holds no transformers model reads it from the folder)."""
    eos = config.eos_token_id if config is not None else None
    eos = eos if isinstance(eos, list) else [eos] if eos is not None else []
    return sorted({*eos, tok.eos_token_id} - {None})


def prompt_seeds(seed: int, count: int) -> list[int]:
    """One sampling seed per prompt position, derived from a batch seed.

    Engines sample prompt i from its own generator, so its tokens do not depend on which other
    prompts share its batch, on the batch size or on how prompts are split over ranks.
    """
    return [int.from_bytes(hashlib.sha256(f"{seed}:{i}".encode()).digest()[:8], "little") >> 1 for i in range(count)]


def draw_step(rng: random.Random, items: Sequence[T], n: int) -> tuple[list[T], list[int]]:
    """One training step's draw: n items without replacement (all of them if fewer) and a sampling seed for each.

    Every backend draws its steps here, from one `random.Random(stage seed)`, so the TRL warmup's
    cached teacher rollouts and the torch and DeepSpeed stages see the same prompts and seeds step for step.
    """
    picked = rng.sample(items, min(n, len(items)))
    return picked, prompt_seeds(rng.randrange(2**31), len(picked))


def peek_draw(rng: random.Random, items: Sequence[T], n: int) -> tuple[list[T], list[int]]:
    """The draw the next `draw_step(rng, items, n)` will make, leaving `rng` as it is (a stage's checkpoint saves it):
    a helper process samples the next step's rollouts while this one trains (backends/teacher_process.py)."""
    ahead = random.Random()
    ahead.setstate(rng.getstate())
    return draw_step(ahead, items, n)
