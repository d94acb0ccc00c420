"""A served teacher as the distillation stages and C2 see it: seeded rollouts and scores over HTTP.

Two requests, both vLLM's `POST /v1/completions` with token ids (so the server tokenizes nothing):
- rollouts (the warmup, C2's teacher samples): one request per prompt with its own `seed` (vLLM takes one
  seed a request), `n` samples, `logprobs: k`, the prompt protocol's stop tokens as `stop_token_ids`;
- scores (on-policy distillation, C2's student samples): prompt + completion as one prompt,
  `prompt_logprobs: k`, `max_tokens: 1`; the completion positions' entries are the teacher's view.
Sampling settings are always sent in full (temperature, top_p 1, top_k 0, min_p 0, repetition_penalty 1):
vLLM otherwise takes defaults from the model's generation_config.json (Qwen3's: temperature 0.6, top_k 20).

vLLM's log-probs are the raw logits' log-softmax (`logprobs_mode: raw_logprobs`), and its prompt log-probs
are so in every mode: at temperature 1. The losses take log-probs at the stage's sampling temperature, so a
stage with a served teacher runs at temperature 1 (the preflight refuses any other).
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from s2d_bench.config import ModelConfig
from s2d_bench.generation.protocol import render, stop_ids_of
from s2d_bench.generation.rollouts import Rollouts, rollouts_from_tokens
from s2d_bench.generation.sampling import Sampling
from s2d_bench.models.sequences import Batch
from s2d_bench.nodefiles import write_atomic_bytes
from s2d_bench.served.client import NEUTRAL, Client, ServerError


@dataclass
class TeacherLogprobs:
    """The teacher's view of a batch's completion positions, at temperature 1 over its vocabulary: the log-prob of each
    completion token (N, T), and its top k tokens (N, T, k) with their log-probs (N, T, k). Padding positions hold 0."""

    token: torch.Tensor
    ids: torch.Tensor
    logp: torch.Tensor

    def rows(self, rows: slice) -> "TeacherLogprobs":
        return TeacherLogprobs(self.token[rows], self.ids[rows], self.logp[rows])

    def to(self, device: torch.device | str) -> "TeacherLogprobs":
        return TeacherLogprobs(self.token.to(device), self.ids.to(device), self.logp.to(device))

    @classmethod
    def pack(cls, positions: list[list[tuple[float, list[tuple[int, float]]]]], width: int, k: int) -> "TeacherLogprobs":
        """From per sequence, per position (token log-prob, [(id, log-prob)] best first), right-padded to `width`."""
        n = len(positions)
        token, ids, logp = torch.zeros(n, width), torch.zeros(n, width, k, dtype=torch.long), torch.zeros(n, width, k)
        for i, seq in enumerate(positions):  # one tensor a sequence: a 4,096-token completion is 4,096 positions
            if not seq:
                continue
            if any(len(top) != k for _, top in seq):
                raise ServerError(f"teacher server sent other than the {k} alternatives asked for at a position")
            token[i, : len(seq)] = torch.tensor([lp for lp, _ in seq])
            if k:
                ids[i, : len(seq)] = torch.tensor([[t for t, _ in top] for _, top in seq], dtype=torch.long)
                logp[i, : len(seq)] = torch.tensor([[v for _, v in top] for _, top in seq])
        return cls(token, ids, logp)


class ServedTeacher:
    """The teacher behind `cfg.server`, serving `cfg.served_model`. It connects on first use, so a stage that finds
    everything it needs in the teacher cache never contacts the server."""

    def __init__(self, cfg: ModelConfig, tok: PreTrainedTokenizerBase, stop_ids: list[int], thinking: bool) -> None:
        self.cfg, self.tok, self.stop_ids, self.thinking = cfg, tok, stop_ids, thinking
        self.name = cfg.served_model
        self._client: Client | None = None
        self._card: dict = {}  # the served model's card from GET /v1/models, read as the client connects

    @classmethod
    def beside(cls, cfg: ModelConfig, student_ref: str, thinking: bool) -> "ServedTeacher":
        """The served teacher with the student's tokenizer and stop tokens (its folder's generation config), loaded without
        its weights: for evaluating the teacher and for C2, where no student is at hand."""
        from transformers import GenerationConfig

        from s2d_bench.models.builders import sampling_tokenizer
        from s2d_bench.models.refs import load_kwargs, resolve_model

        ref = resolve_model(student_ref)
        tok = sampling_tokenizer(ref)
        try:
            generation = GenerationConfig.from_pretrained(ref, **load_kwargs(ref))
        except OSError:  # a folder without generation_config.json: the tokenizer's EOS alone
            generation = None
        return cls(cfg, tok, stop_ids_of(generation, tok), thinking)

    @property
    def client(self) -> Client:
        if self._client is None:
            client = Client(self.cfg.server, self.cfg.http.timeout_s, self.cfg.http.retries, self.cfg.http.concurrency)
            cards = client.get("/v1/models").get("data", [])
            served = [m.get("id") for m in cards]
            if self.name not in served:
                client.close()
                raise ServerError(f"teacher server {client.url} serves {', '.join(map(repr, served)) or 'no model'}, not "
                                  f"'{self.name}' (teacher.served_model)")
            self._card = cards[served.index(self.name)]
            self._client = client
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # ------------------------------------------------------------------ the two requests
    def rollouts(self, prompts: list[str], sampling: Sampling, seeds: list[int], k: int, cache: Path | None = None
                 ) -> tuple[Rollouts, TeacherLogprobs]:
        """`sampling.k` teacher samples per prompt (prompt i from seeds[i]) with the top-k log-probs at every sampled
        position; from `cache` (a folder of content-addressed files) when these rollouts were drawn before."""
        rows = render(self.tok, prompts, self.thinking)
        key = self.cache_key(rows, seeds, sampling, k)
        path = cache / f"{key}.pt" if cache is not None else None
        kept = _cached(path) if path is not None else None
        if kept is not None:
            completions, logprobs = kept["completions"], TeacherLogprobs(kept["token"], kept["ids"], kept["logp"])
        else:
            answers = self.client.map(lambda job: self._sample(*job, sampling, k), list(zip(rows, seeds)))
            completions = [ids for answer in answers for ids, _ in answer]
            width = max(1, max(map(len, completions), default=1))
            logprobs = TeacherLogprobs.pack([seq for answer in answers for _, seq in answer], width, k)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                write_atomic_bytes(path, _saved({"completions": completions, "token": logprobs.token, "ids": logprobs.ids,
                                                 "logp": logprobs.logp}))
        return rollouts_from_tokens(self.tok, rows, sampling.k, completions), logprobs

    def score(self, batch: Batch, k: int) -> TeacherLogprobs:
        """The teacher's log-prob of every completion token of `batch` and its top k there (`prompt_logprobs`)."""
        prompts = [row[mask.bool()].tolist() for row, mask in zip(batch.input_ids[:, : batch.prompt_len], batch.attention_mask[:, : batch.prompt_len])]
        completions = [row[mask.bool()].tolist() for row, mask in zip(batch.completion_ids, batch.completion_mask)]
        seqs = self.client.map(lambda pair: self._score(*pair, k), list(zip(prompts, completions)))
        return TeacherLogprobs.pack(seqs, batch.completion_ids.shape[1], k)

    def _sample(self, row: list[int], seed: int, sampling: Sampling, k: int | None) -> list[tuple[list[int], list]]:
        """`sampling.k` samples of one prompt from `seed`: (token ids, per position (log-prob, top k)) each; k None: ids only."""
        body = {"model": self.name, "prompt": row, "n": sampling.k, "seed": seed, "max_tokens": sampling.max_new_tokens,
                "temperature": sampling.temperature, **NEUTRAL, "top_p": sampling.top_p, "top_k": sampling.top_k,
                "stop_token_ids": self.stop_ids, "logprobs": k, "return_token_ids": True, "return_tokens_as_token_ids": True}
        choices = sorted(self.client.post("/v1/completions", body)["choices"], key=lambda c: c["index"])
        out = []
        for choice in choices:
            ids, lp = choice["token_ids"], choice["logprobs"]
            seq = [] if k is None else [(token_lp, _best(((int(label.split(":", 1)[1]), v) for label, v in top.items()), k))
                                        for token_lp, top in zip(lp["token_logprobs"], lp["top_logprobs"])]
            out.append((ids, seq))
        return out

    def sample_ids(self, row: list[int], seed: int, sampling: Sampling) -> list[list[int]]:
        """The token ids of `sampling.k` samples of one rendered prompt from `seed` (evaluation: engine.py)."""
        return [ids for ids, _ in self._sample(row, seed, sampling, None)]

    def max_model_len(self) -> int | None:
        """The context the server serves the teacher with: its model card (GET /v1/models), read once as the client
        connects (an evaluation checks its prompts per benchmark; the server need not be asked each time)."""
        self.client  # noqa: B018 - connects on first use, reading the card
        return self._card.get("max_model_len")

    def _score(self, prompt: list[int], completion: list[int], k: int) -> list[tuple[float, list[tuple[int, float]]]]:
        body = {"model": self.name, "prompt": prompt + completion, "max_tokens": 1, "temperature": 1.0, **NEUTRAL,
                "prompt_logprobs": k}
        entries = self.client.post("/v1/completions", body)["choices"][0]["prompt_logprobs"][len(prompt):]
        out = []
        for token, entry in zip(completion, entries):
            table = {int(i): v for i, v in entry.items()}
            ranked = sorted(table.items(), key=lambda item: (item[1].get("rank") or 0, -item[1]["logprob"]))
            out.append((table[token]["logprob"], [(i, v["logprob"]) for i, v in ranked[:k]]))
        return out

    def cache_key(self, rows: list[list[int]], seeds: list[int], sampling: Sampling, k: int) -> str:
        """What a cached batch of rollouts is: this teacher, these prompt ids and seeds, k and the sampling."""
        blob = json.dumps({"teacher": self.name, "rows": rows, "seeds": seeds, "k": k, "sampling": asdict(sampling),
                           "stop": self.stop_ids}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:32]

    # ------------------------------------------------------------------ the preflight's probe
    def check_tokenizer(self, probes: list[str]) -> None:
        """Refuse a server whose tokenizer is not the student's: every id a stage sends means a token to both.

        The student's last token id must exist on the server and decode the same, and each probe (rendered prompts,
        digits, LaTeX, non-ASCII text) must tokenize to the same ids."""
        last = len(self.tok) - 1
        try:
            theirs = self.client.post("/detokenize", {"model": self.name, "tokens": [last]})["prompt"]
        except ServerError as exc:
            raise ServerError(f"{exc} (the student's vocabulary has {len(self.tok):,} tokens: the served teacher's has fewer)") from None
        if theirs != self.tok.decode([last]):
            raise ServerError(f"teacher server {self.client.url}: token {last} decodes as {theirs!r} there and "
                              f"{self.tok.decode([last])!r} for the student; the teacher and the student need one tokenizer")
        for text in probes:
            ours = self.tok(text, add_special_tokens=False)["input_ids"]
            served = self.client.post("/tokenize", {"model": self.name, "prompt": text, "add_special_tokens": False})["tokens"]
            if served != ours:
                at = next((i for i, (a, b) in enumerate(zip(ours, served)) if a != b), min(len(ours), len(served)))
                raise ServerError(f"teacher server {self.client.url} tokenizes {text[:60]!r} otherwise than the student (first "
                                  f"difference at token {at}); the teacher and the student need one tokenizer")


def _best(pairs: Any, k: int) -> list[tuple[int, float]]:
    """The k most likely of (id, log-prob) pairs (the sampled token may come beside the top k: vLLM adds it)."""
    return sorted(pairs, key=lambda p: -p[1])[:k]


def _cached(path: Path) -> dict[str, Any] | None:
    """A cache file's rollouts, or None when there is none or it cannot be read (damaged: it is drawn again, with a
    warning, and rewritten)."""
    if not path.exists():
        return None
    try:
        kept = torch.load(path, weights_only=True)
        if not {"completions", "token", "ids", "logp"} <= set(kept):
            raise KeyError("a key is missing")
        return kept
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a miss
        print(f"warning: teacher cache {path}: unreadable ({type(exc).__name__}); drawing these rollouts again", file=sys.stderr)
        return None


def _saved(obj: dict[str, Any]) -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()
