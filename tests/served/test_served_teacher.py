"""A teacher on its own server: a real `s2d-bench serve` on 127.0.0.1, our client, the estimators and the stages.

The served numbers must be the local ones: the sampled-token estimator's loss and gradient on the same tokens, the
top-k estimator at k = vocabulary size against the exact KL, and a whole warmup (the server samples with the seeds
the local teacher would) against the local warmup."""

from __future__ import annotations

import copy
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import torch

from s2d_bench import chunked
from s2d_bench.backends.base import DistillJob
from s2d_bench.backends.torch_backend import TorchBackend
from s2d_bench.config import DistillConfig, HTTPConfig, ModelConfig, RunConfig
from s2d_bench.generation.hf import HFEngine
from s2d_bench.generation.protocol import prompt_seeds, stop_ids
from s2d_bench.generation.sampling import Sampling
from s2d_bench.models.builders import load_pretrained, save, tiny_qwen3_student, tiny_qwen3_teacher
from s2d_bench.models.sequences import completion_hidden
from s2d_bench.served.client import Client, ServerError
from s2d_bench.served.server import Batcher, Job
from s2d_bench.served.teacher import ServedTeacher
from served_server import free_port, serving

PROMPTS = ["12+7=", "3+45=", "100+2=", "9+9=", "40+41=", "5+0="]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A saved tiny teacher served under the name 'teacher' (every log-prob may be asked for), and a tiny student."""
    root = tmp_path_factory.mktemp("served")
    teacher, tok = tiny_qwen3_teacher(seed=1)
    save(teacher, tok, root / "teacher")
    with serving(root / "teacher") as (url, _):
        yield {"root": root, "url": url}


def _served(url: str, tok, retries: int = 2) -> ServedTeacher:
    cfg = ModelConfig(server=url, served_model="teacher", http=HTTPConfig(timeout_s=30, retries=retries, concurrency=4))
    teacher, _ = tiny_qwen3_teacher(seed=1)
    return ServedTeacher(cfg, tok, stop_ids(teacher, tok), thinking=False)


def _local(world):
    return load_pretrained(str(world["root"] / "teacher"), "cpu")


def _student_batch(student, tok, temperature: float = 1.0):
    engine = HFEngine(student, tok)
    return engine.rollouts(PROMPTS, Sampling(k=1, temperature=temperature, max_new_tokens=8), prompt_seeds(3, len(PROMPTS))).batch


def _loss_and_grad(student, loss_fn):
    student.zero_grad(set_to_none=True)
    loss, stats = loss_fn()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in student.named_parameters() if p.grad is not None}, stats


@pytest.mark.parametrize("estimator, local_estimator", [("sampled", "sampled"), ("topk", "full")])
def test_served_opd_gives_the_local_teachers_loss_and_gradient(world, estimator, local_estimator):
    """Same student samples scored by the server: the sampled estimator equals the local one (both read the teacher's
    log-prob of the sampled token), and top-k at k = vocabulary size equals the exact full-vocabulary KL."""
    teacher, tok = _local(world)
    student, _ = tiny_qwen3_student(seed=2)
    batch = _student_batch(student, tok)
    vocab = student.get_output_embeddings().weight.shape[0]
    view = _served(world["url"], tok).score(batch, vocab)

    def local():
        with torch.no_grad():
            t_hidden = completion_hidden(teacher, batch)
        return chunked.distill_loss(completion_hidden(student, batch), student.get_output_embeddings(), t_hidden, teacher.get_output_embeddings(),
                                    batch.completion_ids, batch.completion_mask, chunked.Objective("reverse", local_estimator), chunk=5)

    def served():
        return chunked.served_distill_loss(completion_hidden(student, batch), student.get_output_embeddings(), view, batch.completion_ids,
                                           batch.completion_mask, chunked.Objective("reverse", estimator, vocab), chunk=5)

    ours, ours_grad, local_stats = _loss_and_grad(student, local)
    theirs, theirs_grad, served_stats = _loss_and_grad(student, served)
    torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-6)
    assert ours_grad.keys() == theirs_grad.keys()
    for name in ours_grad:
        torch.testing.assert_close(theirs_grad[name], ours_grad[name], rtol=1e-4, atol=1e-6)
    # at k = V the top-k statistics are the exact KLs
    assert served_stats["kl_reverse_topk"] == pytest.approx(local_stats["kl_reverse"], rel=1e-5)
    assert served_stats["kl_forward_topk"] == pytest.approx(local_stats["kl_forward"], rel=1e-5)


def test_topk_below_the_vocabulary_is_the_local_topk_estimate(world):
    """k < V: the server's top k and the tail its k log-probs leave give the local top-k + tail KL."""
    teacher, tok = _local(world)
    student, _ = tiny_qwen3_student(seed=2)
    batch = _student_batch(student, tok)
    view = _served(world["url"], tok).score(batch, 7)
    with torch.no_grad():
        t_hidden = completion_hidden(teacher, batch)
        s_hidden = completion_hidden(student, batch)
        local, _ = chunked.distill_loss(s_hidden, student.get_output_embeddings(), t_hidden, teacher.get_output_embeddings(), batch.completion_ids,
                                        batch.completion_mask, chunked.Objective("reverse", "topk", 7))
        served, _ = chunked.served_distill_loss(s_hidden, student.get_output_embeddings(), view, batch.completion_ids, batch.completion_mask,
                                                chunked.Objective("reverse", "topk", 7))
    torch.testing.assert_close(served, local, rtol=1e-4, atol=1e-5)


def test_a_requests_log_probs_do_not_depend_on_the_requests_that_reach_the_server_with_it(world):
    """A client sends a stage's scoring requests together, and which of them the server's worker takes in one batch is
    chance: a sequence's log-probs are the same, bit for bit, scored alone or beside longer requests, so a served OPD
    or C2 reruns to the same numbers (the worker never pads one request to another's length)."""
    teacher, tok = _local(world)
    batcher = Batcher(teacher, tok)
    sampling = Sampling(k=1, max_new_tokens=1)

    def tables(*prompts: str) -> list:  # the worker's answer to requests taken together, as a score request asks (max_tokens 1)
        jobs = [Job(tok(p)["input_ids"], sampling, 5, tuple(batcher.engine.eos_ids), 9) for p in prompts]
        with torch.no_grad():
            batcher._answer(sampling, jobs[0].stop, jobs)
        return [job.tables for job in jobs]

    (alone,) = tables(PROMPTS[0])
    longer = ["".join(PROMPTS) * n for n in (1, 2, 3)]
    assert tables(PROMPTS[0], *longer)[0] == alone and tables(*longer, PROMPTS[0])[-1] == alone
    assert len(alone) == 1 and len(alone[0]) == len(tok(PROMPTS[0])["input_ids"])  # each prompt position + the sampled token's


def _warmup(world, tok, teacher, steps: int = 2, cache: Path | None = None):
    student, _ = tiny_qwen3_student(seed=2)
    vocab = student.get_output_embeddings().weight.shape[0]
    cfg = DistillConfig(steps=steps, batch_size=4, lr=1e-2, max_new_tokens=6, estimator="topk", top_k=vocab, chunk_size=0)
    rows = []
    backend = TorchBackend(RunConfig(device="cpu"))
    backend.warmup(DistillJob("warmup", student, teacher, tok, PROMPTS, cfg, 11, rows.append, teacher_cache=cache))
    return student, rows


def test_a_served_teacher_scores_opds_student_samples_as_the_local_teacher_does(world):
    """On-policy distillation against the server (k = V: the exact reverse KL): the student samples locally, the
    server scores every sample's tokens, and the stage's losses and weights are the local stage's."""
    teacher, tok = _local(world)
    runs = []
    for against in (teacher, _served(world["url"], tok)):
        student, _ = tiny_qwen3_student(seed=2)
        vocab = student.get_output_embeddings().weight.shape[0]
        cfg = DistillConfig(steps=2, batch_size=4, lr=1e-2, max_new_tokens=6, estimator="topk", top_k=vocab, chunk_size=0, temperature=1.0)
        rows = []
        TorchBackend(RunConfig(device="cpu")).opd(DistillJob("opd", student, against, tok, PROMPTS, cfg, 11, rows.append))
        runs.append((student, rows))
    (local, local_rows), (served, served_rows) = runs
    assert [r["loss"] for r in served_rows] == pytest.approx([r["loss"] for r in local_rows], rel=1e-5)
    assert all(r["loss"] > 0 for r in served_rows)
    for (name, a), b in zip(local.state_dict().items(), served.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-4, msg=name)  # as in the warmup's test below


def test_a_served_warmup_trains_the_student_the_local_teacher_trains(world, tmp_path):
    """The server samples each prompt from the seed the local teacher would use and sends every log-prob (k = V): the
    warmup's weights are the local warmup's (forward KL top-k at k = V is the exact KL). Then the same warmup from the
    teacher cache it wrote, with no server at all, gives the same weights again."""
    teacher, tok = _local(world)
    local_student, local_rows = _warmup(world, tok, teacher)
    served_student, served_rows = _warmup(world, tok, _served(world["url"], tok), cache=tmp_path / "cache")
    assert [r["loss"] for r in served_rows] == pytest.approx([r["loss"] for r in local_rows], rel=1e-5)
    for (name, a), b in zip(local_student.state_dict().items(), served_student.state_dict().values()):
        # Adam's first steps move a weight by about lr = 1e-2 whatever its gradient's size: a float32 rounding of a
        # near-zero gradient shows as a few 1e-5 (4e-5 at most, measured); a wrong teacher moves weights by 1e-2
        torch.testing.assert_close(b, a, rtol=0, atol=1e-4, msg=name)
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 2  # a file per step

    nowhere = _served(f"http://127.0.0.1:{free_port()}", tok, retries=0)  # nothing listens there
    cached_student, _ = _warmup(world, tok, nowhere, cache=tmp_path / "cache")
    for a, b in zip(served_student.state_dict().values(), cached_student.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(ServerError, match=r"teacher server http://127\.0\.0\.1:\d+/v1/models: unreachable .* after 1 tries"):
        _warmup(world, tok, nowhere, steps=3, cache=tmp_path / "cache")  # a step the cache does not hold needs the server

    damaged = sorted((tmp_path / "cache").glob("*.pt"))[0]
    damaged.write_bytes(damaged.read_bytes()[:100])  # a damaged file is drawn again (from the server) and rewritten
    again, _ = _warmup(world, tok, _served(world["url"], tok), cache=tmp_path / "cache")
    for a, b in zip(served_student.state_dict().values(), again.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-4)  # the server batches requests as they come: last-bit logits
    assert len(damaged.read_bytes()) > 100


class _Flaky(BaseHTTPRequestHandler):
    """A proxy in front of the real server that answers 503 to its first `fail` completions, then forwards."""

    target = ""
    fail = 1
    seen: list[int] = []

    def do_POST(self):  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path == "/v1/completions" and _Flaky.fail > 0:
            _Flaky.fail -= 1
            _Flaky.seen.append(503)
            self._answer(503, b'{"error": {"message": "overloaded", "type": "ServiceUnavailable", "code": 503}}')
            return
        r = httpx.post(self.target + self.path, content=body, headers={"content-type": "application/json"}, timeout=60)
        _Flaky.seen.append(r.status_code)
        self._answer(r.status_code, r.content)

    def do_GET(self):  # noqa: N802
        r = httpx.get(self.target + self.path, timeout=60)
        self._answer(r.status_code, r.content)

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # quiet
        return None


def test_a_503_is_retried_and_a_4xx_is_not(world):
    _, tok = _local(world)
    _Flaky.target, _Flaky.fail, _Flaky.seen = world["url"], 2, []
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        served = _served(f"http://127.0.0.1:{proxy.server_address[1]}", tok, retries=3)
        served.client.backoff_s = 0.05
        student, _ = tiny_qwen3_student(seed=2)
        batch = _student_batch(student, tok).rows(slice(0, 1))
        direct = _served(world["url"], tok).score(batch, 5)
        view = served.score(batch, 5)
        assert _Flaky.seen[:3] == [503, 503, 200] and served.client.retried == 2
        assert torch.equal(view.token, direct.token) and torch.equal(view.ids, direct.ids)
    finally:
        proxy.shutdown()
    with pytest.raises(ServerError, match=r"refused the request: 400 Requested prompt logprobs of 500, which is greater than max allowed: 104"):
        _served(world["url"], tok).score(batch, 500)


def test_another_served_model_and_another_tokenizer_are_refused_in_one_line(world):
    _, tok = _local(world)
    cfg = ModelConfig(server=world["url"] + "/v1", served_model="Qwen/Qwen3-8B")
    with pytest.raises(ServerError, match=r"serves 'teacher', not 'Qwen/Qwen3-8B' \(teacher.served_model\)"):
        ServedTeacher(cfg, tok, [], False).client
    served = _served(world["url"], tok)
    served.check_tokenizer(["12+7=", "\\frac{1}{2} é"])  # the same tokenizer: no complaint
    other = copy.deepcopy(tok)
    other.add_tokens(["<extra>"])
    with pytest.raises(ServerError, match="student's vocabulary has 105 tokens"):
        ServedTeacher(served.cfg, other, [], False).check_tokenizer(["1+1="])


def test_the_server_speaks_vllms_field_names_and_defaults():
    """Every request field `s2d-bench serve` implements is one of vLLM 0.31's `CompletionRequest` fields with the same
    default, and every response field it writes is one vLLM's messages have (manifest: tools/vllm_manifest.py)."""
    from s2d_bench.served.server import CompletionRequest, DetokenizeRequest, TokenizeRequest

    served = json.loads((Path(__file__).parents[1] / "fakes" / "vllm" / "api-0.31.0.json").read_text())["served"]
    messages = served["messages"]
    for ours, theirs in ((CompletionRequest, "CompletionRequest"), (TokenizeRequest, "TokenizeCompletionRequest"),
                         (DetokenizeRequest, "DetokenizeRequest")):
        for name, field in ours.model_fields.items():
            assert name in messages[theirs], f"{theirs} has no field {name}"
            default = None if field.is_required() else field.get_default(call_default_factory=True)
            assert default == messages[theirs][name]["default"], f"{theirs}.{name}: vLLM's default is {messages[theirs][name]['default']!r}"
    assert {"POST /v1/completions", "POST /tokenize", "POST /detokenize", "GET /v1/models", "GET /health"} <= set(served["routes"])
    assert served["model_config"]["max_logprobs"]["default"] == 20
    assert served["model_config"]["logprobs_mode"]["default"] == "raw_logprobs"


def test_the_servers_answers_have_vllms_shapes(world):
    """Field by field against the manifest: a completion with sampled and prompt log-probs, tokenize, detokenize, models,
    and an error."""
    messages = json.loads((Path(__file__).parents[1] / "fakes" / "vllm" / "api-0.31.0.json").read_text())["served"]["messages"]
    url = world["url"]
    answer = httpx.post(f"{url}/v1/completions", json={"prompt": [5, 6, 7], "max_tokens": 3, "seed": 1, "logprobs": 2, "prompt_logprobs": 2,
                                                       "return_token_ids": True}).json()
    assert set(answer) <= set(messages["CompletionResponse"])
    choice = answer["choices"][0]
    assert set(choice) <= set(messages["CompletionResponseChoice"])
    assert set(choice["logprobs"]) == set(messages["CompletionLogProbs"])
    assert choice["prompt_logprobs"][0] is None
    for entry in choice["prompt_logprobs"][1:]:
        assert all(set(v) == set(messages["Logprob"]) for v in entry.values())
        assert 2 <= len(entry) <= 3  # the top 2, and the prompt token itself when it is not among them
    assert set(httpx.post(f"{url}/tokenize", json={"prompt": "1+1="}).json()) <= set(messages["TokenizeResponse"])
    assert set(httpx.post(f"{url}/detokenize", json={"tokens": [5]}).json()) == set(messages["DetokenizeResponse"])
    card = httpx.get(f"{url}/v1/models").json()["data"][0]
    assert set(card) <= set(messages["ModelCard"]) and card["id"] == "teacher"
    error = httpx.post(f"{url}/v1/completions", json={"prompt": [5], "logit_bias": {"5": 1.0}})
    assert error.status_code == 400 and set(error.json()["error"]) == set(messages["ErrorInfo"])
    assert "does not implement `logit_bias`" in error.json()["error"]["message"]
    neutral = httpx.post(f"{url}/v1/completions", json={"prompt": [5], "max_tokens": 1, "repetition_penalty": 1.0, "min_p": 0.0})
    assert neutral.status_code == 200


def test_a_client_error_names_the_url_in_one_line():
    port = free_port()
    client = Client(f"http://127.0.0.1:{port}/v1", timeout_s=2, retries=1, backoff_s=0.01)
    with pytest.raises(ServerError) as err:
        client.get("/v1/models")
    assert f"teacher server http://127.0.0.1:{port}/v1/models: unreachable" in str(err.value) and "\n" not in str(err.value)
    assert "after 2 tries" in str(err.value)


def test_a_served_teachers_evaluation_refuses_a_prompt_past_the_servers_context_asking_its_card_once(world):
    """The context comes from the server's model card (vLLM's max_model_len; 2,048 for the tiny teacher), read as the
    client connects: a benchmark's check costs no request, and a prompt with its max_new_tokens past it is refused."""
    from s2d_bench.errors import UserError
    from s2d_bench.served.engine import ServedEngine

    _, tok = tiny_qwen3_student(seed=0)
    served = _served(world["url"], tok)
    engine = ServedEngine(served)
    asked, get = [], Client.get
    served.client.get = lambda path, *a, **kw: asked.append(path) or get(served.client, path, *a, **kw)
    engine.check_prompts(PROMPTS, [str(i) for i in range(len(PROMPTS))], 2000)
    with pytest.raises(UserError, match="exceed the model's context of 2,048 tokens"):
        engine.check_prompts(PROMPTS, [str(i) for i in range(len(PROMPTS))], 2048)
    assert asked == []  # the card was read once, on connecting
    served.close()


def test_the_preflight_checks_a_served_teachers_tokenizer_on_each_benchmarks_first_prompt_and_the_probes(world, monkeypatch):
    """Before anything trains: the server answers and tokenizes as the student does, on the rendered first prompt of each
    benchmark (rendered thinking and not: this tokenizer's template renders both alike) and the probe strings (digits,
    LaTeX, non-ASCII, whitespace)."""
    from types import SimpleNamespace

    from s2d_bench import preflight
    from s2d_bench.config import load_config
    from s2d_bench.generation.protocol import render_texts
    from s2d_bench.tasks.base import Problem

    _, tok = _local(world)
    cfg = load_config(None, [f"teacher.server={world['url']}", "teacher.served_model=teacher", "teacher.builder="])
    targets = [SimpleNamespace(problems=[Problem("a1", "12+7=", "19"), Problem("a2", "3+4=", "7")]), SimpleNamespace(problems=[]),
               SimpleNamespace(problems=[Problem("b1", "\\frac{1}{2}+1=", "3/2")])]
    asked, closed = [], []
    check, close = ServedTeacher.check_tokenizer, ServedTeacher.close
    monkeypatch.setattr(ServedTeacher, "check_tokenizer", lambda self, texts: (asked.append((self.cfg.server, texts)), check(self, texts))[1])
    monkeypatch.setattr(ServedTeacher, "close", lambda self: (closed.append(True), close(self))[1])
    preflight.check_served_teacher(cfg, tok, targets)
    assert asked == [(world["url"], render_texts(tok, ["12+7=", "\\frac{1}{2}+1="], False) + preflight.PROBES)] and closed == [True]
    other = copy.deepcopy(tok)
    other.add_tokens(["<extra>"])
    with pytest.raises(ServerError, match="student's vocabulary has 105 tokens"):
        preflight.check_served_teacher(cfg, other, targets)
    assert len(closed) == 2  # closed after a refusal too
