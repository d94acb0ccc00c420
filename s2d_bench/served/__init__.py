"""A teacher on its own server, reached over vLLM's OpenAI-compatible HTTP API.

A served teacher gives what vLLM's completions API gives: the log-probability of given tokens and
its top-k alternatives (`prompt_logprobs` for a prompt's tokens, `logprobs` for sampled ones), never
the full vocabulary. That is what the sampled-token and top-k estimators need (losses.py), so the
warmup and on-policy distillation train against a teacher that is not resident beside the student.

- `client.py`: the HTTP client (timeouts, retries with backoff, one-line errors naming the URL);
- `teacher.py`: the teacher as a stage sees it: rollouts with top-k log-probs, scores of given tokens,
  the tokenizer probe, the content-addressed cache of warmup rollouts (`cache.py`);
- `server.py`: `s2d-bench serve MODEL`, the same subset of the API on the hf engine (CPU machines, tests).

The field names, defaults and limits come from vLLM 0.31's source, recorded by `tools/vllm_manifest.py`
(`tests/fakes/vllm/api-*.json`, section `served`); a test holds the server and the client to them.
"""
