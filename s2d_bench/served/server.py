"""`s2d-bench serve MODEL`: the subset of vLLM's OpenAI-compatible server a served teacher needs, on the hf engine.

For machines without vLLM (CPUs, tests, a user without a GPU to spare) a model is served with the same
routes, field names, defaults, limits and response shapes as `vllm serve` 0.31 (read from its source:
`tools/vllm_manifest.py`, section `served`), so the client (client.py) and lm-eval's `local-completions`
cannot tell the two apart on what they ask:

- `POST /v1/completions`: prompts as text or token ids; `n`, `seed`, `temperature`, `top_p`, `top_k`,
  `max_tokens`, `stop`, `stop_token_ids`; `logprobs` (top-k at each sampled token) and `prompt_logprobs`
  (top-k at each prompt token, plus the token itself), `echo`, `return_token_ids`, `return_tokens_as_token_ids`;
- `POST /tokenize`, `POST /detokenize`, `GET /v1/models`, `GET /health`.

Log-probabilities are vLLM's default `logprobs_mode: raw_logprobs`: log-softmax of the raw logits, at
temperature 1 whatever the request's temperature (vLLM computes prompt log-probs so in every mode). A
request for a field vLLM has and this server does not implement is refused (400) rather than ignored.
Sampling is the harness's own (sampling.py): a request's samples come from its `seed`, as an evaluation's
problem does from its seed, so a served model samples what the same weights sample locally.
"""

from __future__ import annotations

import queue
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from s2d_bench.generation.engine import EngineConfig
from s2d_bench.generation.hf import HFEngine
from s2d_bench.generation.protocol import context_of
from s2d_bench.generation.sampling import Sampling
from s2d_bench.served.client import NEUTRAL

MAX_LOGPROBS = 20  # vLLM's ModelConfig.max_logprobs default (`--max-logprobs`)
LOGPROB_FLOOR = -9999.0  # vLLM clamps -inf to this in completion log-probs (JSON has no infinity)


class CompletionRequest(BaseModel):
    """The fields of vLLM 0.31's `CompletionRequest` this server implements, with vLLM's defaults (a test compares
    them with the manifest). Any other field vLLM knows is refused when set (`_refuse_unimplemented`)."""

    model_config = ConfigDict(extra="allow")

    model: str | None = None
    prompt: list[list[int]] | list[int] | list[str] | str | None = None
    echo: bool | None = False
    logprobs: int | None = None
    max_tokens: int | None = 16
    n: int = 1
    seed: int | None = None
    stop: str | list[str] | None = Field(default_factory=list)
    stream: bool | None = False
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop_token_ids: list[int] | None = Field(default_factory=list)
    skip_special_tokens: bool = True
    prompt_logprobs: int | None = None
    add_special_tokens: bool = True
    return_tokens_as_token_ids: bool | None = None
    return_token_ids: bool | None = None


class TokenizeRequest(BaseModel):
    model: str | None = None
    prompt: str
    add_special_tokens: bool = True


class DetokenizeRequest(BaseModel):
    model: str | None = None
    tokens: list[int]


class BadRequest(Exception):
    """A request the server refuses, answered as vLLM answers it: `ErrorResponse` with this status."""

    def __init__(self, message: str, status: int = 400, param: str | None = None) -> None:
        super().__init__(message)
        self.message, self.status, self.param = message, status, param


def _error(message: str, status: int, param: str | None = None) -> JSONResponse:
    kind = {400: "BadRequestError", 404: "NotFoundError"}.get(status, "InternalServerError")
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": status}}, status_code=status)


def _refuse_unimplemented(request: CompletionRequest) -> None:
    for name, value in (request.model_extra or {}).items():
        if value not in (None, False, [], {}, "") and value != NEUTRAL.get(name):
            raise BadRequest(f"s2d-bench serve does not implement `{name}`: use vllm serve for it", param=name)
    if request.stream:
        raise BadRequest("s2d-bench serve does not stream: send stream=false", param="stream")


Table = dict[int, tuple[int, float, int, list[tuple[int, float]]]]  # position -> (token, log-prob, rank, top-k (id, log-prob))


@dataclass
class Job:
    """One prompt of a request: its samples, and the log-prob tables of prompt + sample when `k` is set."""

    row: list[int]
    sampling: Sampling
    seed: int
    stop: tuple[int, ...]  # the tokens that end a sample: the model's and the request's stop_token_ids
    k: int | None
    samples: list[list[int]] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)


class Batcher:
    """The model's one worker: the prompts of every request in flight are sampled together, as vLLM batches them.

    A client sends one request a prompt (vLLM takes one seed a request), so a training step arrives as many concurrent
    requests; answering them one at a time would decode one prompt a batch. The worker takes whatever is queued (up to
    `max_prompts`), samples the prompts that share sampling settings in one batch (each from its own seed: the tokens do
    not depend on the batch but through float rounding, sampling.py) and scores each request's sequences a few at a time;
    it alone touches the model.
    Scores are never batched across requests: which requests arrive together is chance, and a sequence padded to another
    request's length rounds otherwise (1e-7), so a served teacher's log-probs, and the OPD weights and C2 figures made
    from them, would differ from rerun to rerun."""

    def __init__(self, model: PreTrainedModel, tok: PreTrainedTokenizerBase, max_prompts: int = 64, score_batch: int = 8) -> None:
        self.model, self.tok, self.max_prompts, self.score_batch = model, tok, max_prompts, score_batch
        self.engine = HFEngine(model, tok, EngineConfig(prompts_per_batch=0))
        self.queue: queue.Queue[Job] = queue.Queue()
        threading.Thread(target=self._loop, name="s2d-serve-model", daemon=True).start()

    def run(self, jobs: list[Job]) -> list[Job]:
        for job in jobs:
            self.queue.put(job)
        for job in jobs:
            job.done.wait()
            if job.error is not None:
                raise job.error
        return jobs

    def _loop(self) -> None:
        while True:
            jobs = [self.queue.get()]
            while len(jobs) < self.max_prompts:
                try:
                    jobs.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            groups: dict[tuple[Sampling, tuple[int, ...]], list[Job]] = {}
            for job in jobs:
                groups.setdefault((job.sampling, job.stop), []).append(job)
            for (sampling, stop), group in groups.items():
                try:
                    with torch.no_grad():
                        self._answer(sampling, stop, group)
                except BaseException as exc:  # noqa: BLE001 - handed to the request that waits for it
                    for job in group:
                        job.error = exc
                finally:
                    for job in group:
                        job.done.set()

    def _answer(self, sampling: Sampling, stop: tuple[int, ...], jobs: list[Job]) -> None:
        self.engine.eos_ids = list(stop)
        outs = self.engine.generate_ids([j.row for j in jobs], sampling, [j.seed for j in jobs])
        for i, job in enumerate(jobs):
            job.samples = [c.ids for c in outs[i * sampling.k : (i + 1) * sampling.k]]
        for job in jobs:  # each request's sequences apart from the others': see the class's docstring
            if job.k is not None:
                for start in range(0, len(job.samples), self.score_batch):
                    job.tables += self._tables([job.row + ids for ids in job.samples[start : start + self.score_batch]], job.k)

    def _tables(self, seqs: list[list[int]], k: int) -> list[Table]:
        """Per sequence, position p (>= 1) -> (token, its log-prob, its rank, the top-k (id, log-prob)) under the model's
        raw logits at temperature 1, from one right-padded forward (a causal model's valid positions never see the pad)."""
        width = max(map(len, seqs))
        ids = torch.full((len(seqs), width), self.tok.pad_token_id or 0, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, seq in enumerate(seqs):
            ids[i, : len(seq)], mask[i, : len(seq)] = torch.tensor(seq), 1
        device = self.model.device
        logp_all = torch.log_softmax(self.model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits[:, :-1].float(), dim=-1)
        out = []
        for i, seq in enumerate(seqs):
            logp = logp_all[i, : len(seq) - 1]
            target = torch.tensor(seq[1:], device=logp.device)
            token_lp = logp.gather(-1, target[:, None]).squeeze(-1)
            ranks = (logp > token_lp[:, None]).sum(-1) + 1
            top_lp, top_ids = logp.topk(min(k, logp.shape[-1]), dim=-1) if k > 0 else (logp[:, :0], target[:, None][:, :0])
            rows = zip(target.tolist(), token_lp.tolist(), ranks.tolist(), top_ids.tolist(), top_lp.tolist())
            out.append({p + 1: (t, lp, r, list(zip(ti, tl))) for p, (t, lp, r, ti, tl) in enumerate(rows)})
        return out


class Served:
    """One model behind the API: requests are validated here and sampled together by its `Batcher`, each prompt's
    samples drawn from its request's seed."""

    def __init__(self, model: PreTrainedModel, tok: PreTrainedTokenizerBase, name: str, max_logprobs: int = MAX_LOGPROBS) -> None:
        self.model, self.tok, self.name = model.eval(), tok, name
        self.vocab = model.get_output_embeddings().weight.shape[0]
        self.max_logprobs = self.vocab if max_logprobs == -1 else max_logprobs
        self.max_model_len = context_of(model.config) or 2**31
        self.stop_ids = HFEngine(model, tok).eos_ids
        self.batcher = Batcher(self.model, tok)

    # ------------------------------------------------------------------ checks
    def _check_model(self, name: str | None) -> None:
        if name is not None and name != self.name:
            raise BadRequest(f"The model `{name}` does not exist.", status=404, param="model")

    def _count(self, value: int | None, what: str) -> int | None:
        if value is None:
            return None
        if value < 0 and value != -1:
            raise BadRequest(f"`{what}` must be a positive value or -1.", param=what)
        wanted = self.vocab if value == -1 else value
        if wanted > self.max_logprobs:
            noun = "prompt logprobs" if what == "prompt_logprobs" else "sample logprobs"
            raise BadRequest(f"Requested {noun} of {wanted}, which is greater than max allowed: {self.max_logprobs}", param=what)
        return wanted

    def _prompts(self, request: CompletionRequest) -> list[list[int]]:
        p = request.prompt
        if p is None or p == [] or p == "":
            raise BadRequest("Either prompt or prompt_embeds must be provided and non-empty.", param="prompt")
        texts = [p] if isinstance(p, str) else p if isinstance(p[0], str) else None
        if texts is not None:
            return [self.tok(t, add_special_tokens=request.add_special_tokens)["input_ids"] for t in texts]
        rows = [p] if isinstance(p[0], int) else p
        for row in rows:
            bad = [t for t in row if not 0 <= t < self.vocab]
            if bad:
                raise BadRequest(f"Token id {bad[0]} is out of vocabulary (size {self.vocab})", param="prompt")
        return [list(r) for r in rows]

    # ------------------------------------------------------------------ answers
    def completions(self, request: CompletionRequest) -> dict[str, Any]:
        _refuse_unimplemented(request)
        self._check_model(request.model)
        k_sample, k_prompt = self._count(request.logprobs, "logprobs"), self._count(request.prompt_logprobs, "prompt_logprobs")
        max_tokens = 16 if request.max_tokens is None else request.max_tokens
        if max_tokens < 0 or request.n < 1:
            raise BadRequest("max_tokens must be >= 0 and n >= 1", param="max_tokens")
        stops = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
        temperature = 1.0 if request.temperature is None else request.temperature
        top_k = request.top_k if request.top_k and request.top_k > 0 else 0
        sampling = Sampling(k=request.n, temperature=temperature, top_p=1.0 if request.top_p is None else request.top_p, top_k=top_k,
                            max_new_tokens=max(max_tokens, 1))
        stop = tuple(sorted({*self.stop_ids, *(request.stop_token_ids or [])}))
        wanted = [k for k in (k_sample, k_prompt) if k is not None]
        rows = self._prompts(request)
        for row in rows:
            if len(row) + max_tokens > self.max_model_len:
                raise BadRequest(f"This model's maximum context length is {self.max_model_len} tokens. However, you requested "
                                 f"{len(row) + max_tokens} tokens ({len(row)} in the messages, {max_tokens} in the completion). "
                                 "Please reduce the length of the messages or completion.", param="prompt")
        seed = request.seed if request.seed is not None else random.randrange(2**62)  # vLLM: one seed for a request's prompts
        jobs = self.batcher.run([Job(row, sampling, seed, stop, max(wanted) if wanted else None) for row in rows])
        choices, generated = [], 0
        for job in jobs:
            for j, ids in enumerate(job.samples):
                ids = ids[:max_tokens]
                generated += len(ids)
                table = job.tables[j] if job.tables else None
                choices.append(self._choice(len(choices), job.row, ids, table, request, k_sample, k_prompt, stops))
        prompt_tokens = sum(map(len, rows))
        return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()), "model": self.name,
                "choices": choices, "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": generated,
                                              "total_tokens": prompt_tokens + generated}}

    def _choice(self, index: int, row: list[int], ids: list[int], table: Table | None, request: CompletionRequest, k_sample: int | None,
                k_prompt: int | None, stops: list[str]) -> dict[str, Any]:
        text = self.tok.decode(ids, skip_special_tokens=request.skip_special_tokens)
        finish, reason = ("stop", None) if ids and ids[-1] in self.stop_ids else ("length", None)
        if ids and ids[-1] in (request.stop_token_ids or []):
            finish, reason = "stop", ids[-1]
        cut = min(((text.find(s), s) for s in stops if s and s in text), default=None)
        if cut is not None:
            text, finish, reason = text[: cut[0]], "stop", cut[1]
        as_id = bool(request.return_tokens_as_token_ids)
        choice: dict[str, Any] = {"index": index, "text": text, "logprobs": None, "finish_reason": finish, "stop_reason": reason,
                                  "token_ids": ids if request.return_token_ids else None,
                                  "prompt_logprobs": None, "prompt_token_ids": row if request.return_token_ids else None}
        if k_prompt is not None:
            choice["prompt_logprobs"] = [None] + [self._entry(table[p], k_prompt) for p in range(1, len(row))]
        if k_sample is not None:
            start = 1 if request.echo else len(row)
            positions = list(range(start, len(row) + len(ids)))
            shown = ([None] if request.echo else []) + [self._top(table[p], k_sample, as_id) for p in positions]
            tokens = (row if request.echo else []) + ids
            choice["logprobs"] = self._completion_logprobs(tokens, shown, as_id)
        if request.echo:
            choice["text"] = self.tok.decode(row) + choice["text"]
        return choice

    def _entry(self, row: tuple[int, float, int, list[tuple[int, float]]], k: int) -> dict[str, dict[str, Any]]:
        """A prompt position as vLLM writes it: {token id: Logprob} for the token itself and the top k."""
        token, lp, rank, top = row
        out = {str(token): self._logprob(token, lp, rank)}
        for r, (i, l) in enumerate(top[:k], start=1):
            out.setdefault(str(i), self._logprob(i, l, r))
        return out

    def _logprob(self, token: int, lp: float, rank: int) -> dict[str, Any]:
        return {"logprob": max(lp, LOGPROB_FLOOR), "rank": rank, "decoded_token": self.tok.decode([token])}

    def _top(self, row: tuple[int, float, int, list[tuple[int, float]]], k: int, as_id: bool) -> tuple[int, float, dict[str, float]]:
        token, lp, _, top = row
        shown = {self._label(token, as_id): max(lp, LOGPROB_FLOOR)}
        for i, l in top[:k]:
            shown.setdefault(self._label(i, as_id), max(l, LOGPROB_FLOOR))
        return token, lp, shown

    def _label(self, token: int, as_id: bool) -> str:
        return f"token_id:{token}" if as_id else self.tok.decode([token])

    def _completion_logprobs(self, tokens: list[int], shown: list, as_id: bool) -> dict[str, list]:
        """vLLM's `CompletionLogProbs`: per token its label, log-prob, top alternatives and text offset."""
        out: dict[str, list] = {"text_offset": [], "token_logprobs": [], "tokens": [], "top_logprobs": []}
        offset = 0
        for token, entry in zip(tokens, shown):
            label = self._label(token, as_id)
            out["tokens"].append(label)
            out["token_logprobs"].append(None if entry is None else max(entry[1], LOGPROB_FLOOR))
            out["top_logprobs"].append(None if entry is None else entry[2])
            out["text_offset"].append(offset)
            offset += len(label)
        return out

    def tokenize(self, request: TokenizeRequest) -> dict[str, Any]:
        self._check_model(request.model)
        ids = self.tok(request.prompt, add_special_tokens=request.add_special_tokens)["input_ids"]
        return {"count": len(ids), "max_model_len": self.max_model_len, "tokens": ids, "token_strs": None}

    def detokenize(self, request: DetokenizeRequest) -> dict[str, Any]:
        self._check_model(request.model)
        bad = [t for t in request.tokens if not 0 <= t < len(self.tok)]
        if bad:
            raise BadRequest(f"Token id {bad[0]} is out of vocabulary (size {len(self.tok)})", param="tokens")
        return {"prompt": self.tok.decode(request.tokens)}

    def models(self) -> dict[str, Any]:
        card = {"id": self.name, "object": "model", "created": int(time.time()), "owned_by": "s2d-bench", "root": self.name,
                "parent": None, "max_model_len": self.max_model_len, "permission": []}
        return {"object": "list", "data": [card]}


def app(served: Served) -> FastAPI:
    """The FastAPI application answering for `served` (uvicorn runs it: `serve`)."""
    api = FastAPI(title="s2d-bench serve", docs_url=None, redoc_url=None)

    @api.exception_handler(BadRequest)
    async def _bad(_: Request, exc: BadRequest) -> JSONResponse:
        return _error(exc.message, exc.status, exc.param)

    @api.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:  # vLLM answers a malformed body 400, not 422
        first = exc.errors()[0] if exc.errors() else {}
        return _error(f"{first.get('msg', 'invalid request')}: {'.'.join(map(str, first.get('loc', ())))}", 400)

    @api.get("/health")
    def health() -> Response:
        return Response(status_code=200)

    @api.get("/v1/models")
    def models() -> dict[str, Any]:
        return served.models()

    @api.post("/v1/completions")
    def completions(request: CompletionRequest) -> dict[str, Any]:
        return served.completions(request)

    @api.post("/tokenize")
    def tokenize(request: TokenizeRequest) -> dict[str, Any]:
        return served.tokenize(request)

    @api.post("/detokenize")
    def detokenize(request: DetokenizeRequest) -> dict[str, Any]:
        return served.detokenize(request)

    return api


def serve(ref: str, host: str, port: int, name: str | None, max_logprobs: int, device: str, dtype: str) -> None:
    """Load `ref` and answer on host:port until interrupted."""
    import uvicorn

    from s2d_bench.generation.engine import resolve_device, resolve_dtype
    from s2d_bench.models.builders import load_pretrained

    device = resolve_device(device)
    model, tok = load_pretrained(ref, device, resolve_dtype(dtype, device))
    served = Served(model, tok, name or ref, max_logprobs)
    print(f"serving {ref} as '{served.name}' at http://{host}:{port}/v1 (max_logprobs {served.max_logprobs})", flush=True)
    uvicorn.run(app(served), host=host, port=port, log_level="warning")
