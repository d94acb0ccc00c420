"""Mutation score of the code that makes the numbers (`make mutants`; not part of `make test` or CI).

Runs mutmut (configured in pyproject.toml: which modules, which tests) with one worker per core,
then reads its results (mutants/**/*.meta) and writes, per module, how many mutants the tests
killed, how many survived and how many are equivalent (listed in EQUIVALENT below with the
reason: same behaviour, so no test can kill them). The score is killed / (all - equivalent).

Modules come in groups: "core" is pyproject's [tool.mutmut], run in the repository itself; every
other group ([tool.s2d-mutants.groups.<name>]: modules and the tests that exercise them) runs in a
copy of the repository under .mutants/<name>/ with its own [tool.mutmut], so a group's stats pass
runs only its own tests and a group can be rerun alone. The results file keeps every group's last
scores; a run of one group replaces that group's.

mutmut numbers the mutants of a function in order, so editing the function renumbers them: an
EQUIVALENT entry is keyed by the function and the line as the mutant reads it, never by number,
and entries that match no surviving mutant are reported (killed since, or the code changed).

    python benchmarks/mutants.py              # run the core group, then score; writes results/mutants.json
    python benchmarks/mutants.py --group backends   # another group (--group all: every group in turn)
    python benchmarks/mutants.py --score-only # score the last run
    python benchmarks/mutants.py --score-only --show NAME ...   # the line each mutant changes (for EQUIVALENT)
"""

from __future__ import annotations

import argparse
import ast
import difflib
import fnmatch
import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections import defaultdict
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "mutants.json"

# (mutated function, the line as the mutant reads) -> why it behaves as the original. Keyed by what the mutant changes,
# not by mutmut's number (editing a function renumbers its mutants), so an entry can never excuse another mutation.
# Reviewed by hand; a new survivor is either killed by a test or added here with its reason.
# Reasons shared by several mutations of one line (each mutant is still listed by the line it writes).
STEP_ALWAYS_LOGGED = "every row a stage or a pretraining logs carries its step (the torch and TRL backends, models/pretrain.py): the default is never read"
SAVING_MATTERS_ACROSS_RANKS = (
    "a base model is whole and, in one process, so is a stage's when saved (see the mutant that never enters the context): "
    "only which nodes enter the backend's saving context changes, which matters across ranks only, and ranks run as "
    "subprocesses, which import the installed code")

CPU_HERE = "on this CPU-only machine every tensor is on the CPU, where a device of None or the default leaves it (a GPU run's tests would catch it)"
FOUR_D = "the tensors are 4-D (batch, heads, positions, dim) wherever attention and its cache run: dim +2 is dim -2"
OFF_CPU = ("the branch for tensors off the CPU, which this CPU-only machine never takes; attend_plain, what it calls, is tested "
           "against the CPU kernel")
ZEROED_NOT_DROPPED = ("gradients zeroed in place instead of dropped: every parameter of the models the stages train takes part in "
                      "every forward, so the next backward writes each one anew either way (the same sums), and AdamW steps the "
                      "same parameters")
UNSHOWN_DEFAULT = ("the default is read only for a stage config without an estimator (GRPO's), which the same check accepts: its "
                   "message is never shown")
EXITED_WAIT = ("the process closed its end of the socket (the pipe broke, or EOF): it has exited or is exiting, and the wait's "
               "bound is never reached")

DAEMON = ("the thread sending the teacher ends once the process has it or is gone, and `close` (which kills a process still "
          "starting) waits for it: no such thread outlives a stage, so whether the interpreter would wait for one at exit never comes up")
STOP_WAIT = ("how long a process told to stop (or killed) gets to exit before it is killed: it exits at once in every case "
             "(told when idle, killed otherwise), so the bound is never reached")

PARTIAL_NAME = "the name of the file written before it replaces the cache: any name in the same folder, replaced onto it whole"
DTYPE_AS_DEVICE = ("the dtype given as the device: loaded in float32, `model.to(dtype)` casts it on the CPU, where it already "
                   "is: the model asked for (tested in bfloat16); on a GPU it would stay on the CPU")
SAFE_LOAD_DEFAULT = "torch.load's default is weights_only=True (since torch 2.6): the same refusal of a planted pickle (tested)"
COLLATOR_BOUNDARY = ("without the completion mask TRL's ChatML collator finds the prompt's end by tokenizing the row's "
                     "rendered prompt, which is how its prompt_ids were made (protocol.render): the same boundary")
TRL_DEFAULT = ("the value trl 1.16's config takes by default: written out so that a TRL release with another default changes "
               "nothing of ours (test_trl_backend checks each value)")
VLLM_ONLY = "TRL reads the importance-sampling correction only when it samples with vLLM: with its own generate the flag is never read"
BIAS_DTYPE = ("an attention bias here (the prompts' padding, a multi-token step's causal mask) holds 0 and -inf, exact in "
              "every float dtype; the CPU kernel takes a float32 bias beside bfloat16 queries with the same result (a bfloat16 "
              "engine samples; the step's checked by hand) and attend_plain adds it to float32 scores: its dtype changes no value")
NEG_INF = 'float("-INF") is float("-inf")'
ONE_GROUP_SHORTCUT = ("the whole-batch call is a shortcut the condition never takes then: with one group the loop makes the "
                      "same SDPA call on every row, in order, and writes them whole, bit for bit the same (tested on prompts of one "
                      "length), an index copy slower")
ATTN_ALWAYS_SET = "every transformers config has _attn_implementation (PretrainedConfig sets it): the default is never read"
LAYERS_ONE_DTYPE = "every layer's keys and values share the model's one dtype: any of them gives the bias's"
PREFILL_LENGTHS = ("the prefill's attention reads the prompts' lengths (prefill_attention), never the mask: the mask given to the "
                   "model is not read")
PREFILL_GROUPS = ("the prompts' lengths are a speed-up: without them the prefill attends with the padding mask (plain SDPA), "
                  "the same values to float rounding at the real positions, the same tokens in every test")
PADDING_KV = "keys and values at padding positions are never attended (the cache's bias is -inf there): any value serves"
SHORT_PROMPTS = ("which prefill goes by the lengths and which takes plain SDPA differs only for prompts of one or two tokens: "
                 "the same values to float rounding either way (PREFILL_GROUPS)")
DEFAULT_SCALE = "the models' attention scale is head_dim ** -0.5, SDPA's default when none is given"
CAUSAL_MODULE = "sdpa_gqa_forward reads only the module's is_causal, True for every causal LM's attention and the default without one"
TEMP_PREFIX = "the start of the name of the folder TRL's trainers write in, removed with the backend: any name serves"
ASKED_MARK = ("what a hidden-state or samples request leaves in the queue of unanswered requests is only counted (`close` kills "
              "a process with answers outstanding) and never compared: only the warmup's rollouts compare their key, and a "
              "stage that asks these never asks rollouts")
FROZEN_TEACHER = ("`trained` tells only the vllm engine to push the weights before every rollout instead of once; the hf engine, "
                  "the one here (vLLM does not install), samples the module itself either way")

EQUIVALENT: dict[tuple[str, str], str] = {
    # trl group
    ('s2d_bench.backends.trl_backend.xǁTRLBackendǁ_teacher_rollouts', 'tmp = cache.with_suffix("XX.partialXX")'): PARTIAL_NAME,
    ('s2d_bench.backends.trl_backend.xǁTRLBackendǁ_teacher_rollouts', 'tmp = cache.with_suffix(".PARTIAL")'): PARTIAL_NAME,
    ('s2d_bench.backends.trl_backend.xǁTRLBackendǁ_teacher_rollouts',
     'with open_rollouts(self.rollout, job.teacher, job.tok, self.prompt.thinking, trained=True) as engine:'): FROZEN_TEACHER,
    ('s2d_bench.backends.trl_backend.xǁTRLBackendǁ_teacher_rollouts',
     'with open_rollouts(self.rollout, job.teacher, job.tok, self.prompt.thinking, trained=None) as engine:'): FROZEN_TEACHER,
    ('s2d_bench.backends.trl_backend.xǁTRLBackendǁ_grpo', 'args = trl_args("grpo", job.cfg, job.seed, None, self._tmp.name, self.rollout, self.prompt)'): CPU_HERE,
    ('s2d_bench.backends.trl_backend.xǁTRLBackendǁwarmup', 'args = trl_args("forward_kl", job.cfg, job.seed, None, self._tmp.name)'): CPU_HERE,
    ('s2d_bench.backends.trl_backend.xǁTRLBackendǁopd', 'args = trl_args("reverse_kl", job.cfg, job.seed, None, self._tmp.name, self.rollout, self.prompt)'): CPU_HERE,
    ('s2d_bench.backends.trl_backend.xǁTRLBackendǁ__init__', 'self._tmp = tempfile.TemporaryDirectory(prefix=None)'): TEMP_PREFIX,
    ('s2d_bench.backends.trl_backend.xǁTRLBackendǁ__init__', 'self._tmp = tempfile.TemporaryDirectory(prefix="XXs2d-trl-XX")'): TEMP_PREFIX,
    ('s2d_bench.backends.trl_backend.xǁTRLBackendǁ__init__', 'self._tmp = tempfile.TemporaryDirectory(prefix="S2D-TRL-")'): TEMP_PREFIX,
    ('s2d_bench.backends.trl_backend.xǁTRLBackendǁwarmup',
     '"XXcompletion_maskXX": [0] * len(r["prompt_ids"]) + [1] * len(r["completion_ids"])} for r in rows])'): COLLATOR_BOUNDARY,
    ('s2d_bench.backends.trl_backend.xǁTRLBackendǁwarmup',
     '"COMPLETION_MASK": [0] * len(r["prompt_ids"]) + [1] * len(r["completion_ids"])} for r in rows])'): COLLATOR_BOUNDARY,
    ('s2d_bench.backends.trl_backend.xǁTRLBackendǁ_teacher_rollouts',
     'sampling = Sampling(temperature=job.cfg.temperature, max_new_tokens=job.cfg.max_new_tokens)'): "a Sampling draws one sample a prompt unless told (k=1)",
    ('s2d_bench.backends.trl_backend.xǁTRLBackendǁ_teacher_rollouts',
     'sampling = Sampling(k=1, max_new_tokens=job.cfg.max_new_tokens)'): "TRL's warmup runs only at temperature 1 (refused otherwise: GKD leaves it out of its loss), Sampling's default",
    ('s2d_bench.backends.trl_backend.x_vllm_args',
     'return dict(use_vllm=True, vllm_gpu_memory_utilization=rollout.gpu_memory_utilization,'): TRL_DEFAULT,
    ('s2d_bench.backends.trl_backend.x_trl_args',
     'output_dir=output_dir, max_steps=cfg.steps, learning_rate=cfg.lr, lr_scheduler_type="constant", weight_decay=0.0, max_grad_norm=cfg.max_grad_norm, logging_steps=1, save_strategy="no", report_to=[],'): TRL_DEFAULT,
    ('s2d_bench.backends.trl_backend.x_trl_args',
     'max_grad_norm=cfg.max_grad_norm, logging_steps=1, save_strategy="no", report_to=[],'): TRL_DEFAULT,
    ('s2d_bench.backends.trl_backend.x_trl_args',
     'weight_decay=0.0, max_grad_norm=cfg.max_grad_norm, logging_steps=1, save_strategy="no", seed=seed, bf16=False, use_cpu=device == "cpu", gradient_checkpointing=cfg.gradient_checkpointing, remove_unused_columns=False,'): TRL_DEFAULT,
    ('s2d_bench.backends.trl_backend.x_trl_args',
     'top_k=0, top_p=1.0,  # dapo: token mean over the batch, as losses.policy_loss'): TRL_DEFAULT,
    ('s2d_bench.backends.trl_backend.x_trl_args',
     'loss_type="dapo", top_p=1.0,  # dapo: token mean over the batch, as losses.policy_loss'): TRL_DEFAULT,
    ('s2d_bench.backends.trl_backend.x_trl_args',
     'loss_type="dapo", top_k=0, **vllm_args(rollout), **template,'): TRL_DEFAULT,
    ('s2d_bench.backends.trl_backend.x_trl_args',
     '**({"vllm_importance_sampling_correction": False} if (rollout.engine == "vllm") or True else {}),'): VLLM_ONLY,
    ('s2d_bench.backends.trl_backend.x_trl_args',
     'return GKDConfig(**common, **accumulation(cfg), lmbda=0.0, beta=0.0, train_sampling_strategy="sequential",'): TRL_DEFAULT,
    ('s2d_bench.backends.trl_backend.x_trl_args',
     'return trl.DistillationConfig(**common, **accumulation(cfg), max_completion_length=cfg.max_new_tokens, top_k=0, top_p=1.0, **vllm_args(rollout), **template)'): TRL_DEFAULT,
    ('s2d_bench.backends.trl_backend.x_trl_args',
     'max_completion_length=cfg.max_new_tokens, top_p=1.0, **vllm_args(rollout), **template)'): TRL_DEFAULT,
    ('s2d_bench.backends.trl_backend.x_trl_args',
     'max_completion_length=cfg.max_new_tokens, top_k=0, **vllm_args(rollout), **template)'): TRL_DEFAULT,
    ('s2d_bench.backends.trl_backend.xǁTRLBackendǁload', 'return load_pretrained(ref, None)'): CPU_HERE,
    ('s2d_bench.backends.trl_backend.xǁTRLBackendǁload', 'return load_pretrained(ref, )'): CPU_HERE,
    # engines group
    ('s2d_bench.backends.teacher_process.x__serve',
     'engines = {"teacher": stack.enter_context(open_rollouts(rollout, teacher.eval(), tok, thinking, trained=None))}'): FROZEN_TEACHER,
    ('s2d_bench.backends.teacher_process.x__serve',
     'engines = {"teacher": stack.enter_context(open_rollouts(rollout, teacher.eval(), tok, thinking, trained=True))}'): FROZEN_TEACHER,
    ('s2d_bench.backends.teacher_process.x__serve',
     'engines["student"] = stack.enter_context(open_rollouts(rollout, student, tok, thinking, trained=None))'): FROZEN_TEACHER,
    ('s2d_bench.backends.teacher_process.x__serve',
     'engines["student"] = stack.enter_context(open_rollouts(rollout, student, tok, thinking, trained=False))'): FROZEN_TEACHER,
    ('s2d_bench.backends.teacher_process.x__serve',
     'engines["student"] = stack.enter_context(open_rollouts(rollout, student, tok, None, trained=True))'):
        "the process's student engine is given token rows (`generate_ids`), rendered by the trainer, never prompts: its "
        "`thinking` is never read",
    ('s2d_bench.backends.teacher_process.xǁTeacherProcessǁask_hidden', 'self._asked.append(None)'): ASKED_MARK,
    ('s2d_bench.backends.teacher_process.xǁTeacherProcessǁask_hidden', 'self._asked.append("XXhiddenXX")'): ASKED_MARK,
    ('s2d_bench.backends.teacher_process.xǁTeacherProcessǁask_hidden', 'self._asked.append("HIDDEN")'): ASKED_MARK,
    ('s2d_bench.backends.teacher_process.xǁTeacherProcessǁask_samples', 'self._asked.append(None)'): ASKED_MARK,
    ('s2d_bench.backends.teacher_process.xǁTeacherProcessǁask_samples', 'self._asked.append("XXsamplesXX")'): ASKED_MARK,
    ('s2d_bench.backends.teacher_process.xǁTeacherProcessǁask_samples', 'self._asked.append("SAMPLES")'): ASKED_MARK,
    ('s2d_bench.generation.hf.xǁHFEngineǁload',
     'model, tok = load_pretrained(ref, None, resolve_dtype(cfg.dtype, device))'): CPU_HERE,
    ('s2d_bench.generation.hf.xǁHFEngineǁload',
     'model, tok = load_pretrained(ref, resolve_dtype(cfg.dtype, device))'): DTYPE_AS_DEVICE,
    ('s2d_bench.backends.runtime.xǁAdamWTrainerǁload_state',
     'state = torch.load(folder / "state.pt", map_location=None, weights_only=True)'): CPU_HERE,
    ('s2d_bench.backends.runtime.xǁAdamWTrainerǁload_state',
     'state = torch.load(folder / "state.pt", weights_only=True)'): CPU_HERE,
    ('s2d_bench.backends.runtime.xǁAdamWTrainerǁload_state',
     'state = torch.load(folder / "state.pt", map_location=next(self.model.parameters()).device, weights_only=None)'): SAFE_LOAD_DEFAULT,
    ('s2d_bench.backends.runtime.xǁAdamWTrainerǁload_state',
     'state = torch.load(folder / "state.pt", map_location=next(self.model.parameters()).device, )'): SAFE_LOAD_DEFAULT,
    ('s2d_bench.backends.runtime.x_cast_copy',
     'return t.detach().to(device=None, dtype=dtype if dtype is not None and t.is_floating_point() else None, copy=True)'): CPU_HERE,
    ('s2d_bench.backends.runtime.x_cast_copy',
     'return t.detach().to(dtype=dtype if dtype is not None and t.is_floating_point() else None, copy=True)'): CPU_HERE,
    ('s2d_bench.backends.runtime.xǁAdamWTrainerǁbackward', 'def xǁAdamWTrainerǁbackward__mutmut_orig(self, loss: torch.Tensor, last: bool = False) -> None:'):
        "AdamWTrainer.backward never reads `last` (DeepSpeed's trainer does)",
    ('s2d_bench.backends.runtime.xǁAdamWTrainerǁstep', 'self.opt.zero_grad(set_to_none=None)'): ZEROED_NOT_DROPPED,
    ('s2d_bench.backends.runtime.xǁAdamWTrainerǁstep', 'self.opt.zero_grad(set_to_none=False)'): ZEROED_NOT_DROPPED,
    ('s2d_bench.backends.refusals.x__trl', 'per_step = st.step_sequences / st.step_mini_batches'):
        "read only when the mini-batches divide the step's sequences (the `or` before it refuses otherwise): the quotient is "
        "exact, and a float with an integer's value leaves the same remainder",
    ('s2d_bench.backends.refusals.x__trl',
     "f\"backend=trl: {stage}.estimator={getattr(st, 'estimator', None)} has no TRL equivalent (its trainers use the \""): UNSHOWN_DEFAULT,
    ('s2d_bench.backends.refusals.x__trl',
     "f\"backend=trl: {stage}.estimator={getattr(st, 'estimator', 'XXXX')} has no TRL equivalent (its trainers use the \""): UNSHOWN_DEFAULT,
    ('s2d_bench.backends.teacher_process.xǁTeacherProcessǁ__init__', 'self._sending = threading.Thread(target=self._send_init, args=(pickle.dumps(init),), daemon=None)'): DAEMON,
    ('s2d_bench.backends.teacher_process.xǁTeacherProcessǁ__init__', 'self._sending = threading.Thread(target=self._send_init, args=(pickle.dumps(init),), daemon=False)'): DAEMON,
    ('s2d_bench.backends.teacher_process.xǁTeacherProcessǁ__init__', 'self._sending = threading.Thread(target=self._send_init, args=(pickle.dumps(init),), )'): DAEMON,
    ('s2d_bench.backends.teacher_process.xǁTeacherProcessǁclose', 'reap(self.proc, self.conn, self._reaper, wait=None)'): STOP_WAIT,
    ('s2d_bench.backends.teacher_process.xǁTeacherProcessǁclose', 'reap(self.proc, self.conn, self._reaper, wait=11)'): STOP_WAIT,
    ('s2d_bench.backends.teacher_process.xǁTeacherProcessǁ__init__', 'self._ready = None'):
        "None and False are read alike: `ready` and `close` test it for truth only, and `ready` sets a bool once the process is",
    ('s2d_bench.backends.teacher_process.xǁTeacherProcessǁ_ended', 'code = self.proc.wait(timeout=None)'): EXITED_WAIT,
    ('s2d_bench.backends.teacher_process.xǁTeacherProcessǁ_ended', 'code = self.proc.wait(timeout=6)'): EXITED_WAIT,
    ('s2d_bench.backends.teacher_process.xǁTeacherProcessǁ_ended', 'code = ""'):
        "read only when the wait runs out, which a process that closed its socket does not make it do (see the wait's bound)",
    ('s2d_bench.generation.hf.xǁHFEngineǁ_sample', 'device = None'): CPU_HERE,
    ('s2d_bench.generation.hf.xǁHFEngineǁ_sample',
     'tokens, alive = self.decode(self.model, ids.to(None), mask.to(device), sampling, self.eos_ids, self.tok.pad_token_id,'): CPU_HERE,
    ('s2d_bench.generation.hf.xǁHFEngineǁ_sample',
     'tokens, alive = self.decode(self.model, ids.to(device), mask.to(None), sampling, self.eos_ids, self.tok.pad_token_id,'): CPU_HERE,
    ('s2d_bench.generation.hf.xǁHFEngineǁ_batches', 'cap = self.cfg.prompts_per_batch or max(len(order), 2)'):
        "with no count bound the cap is the number of prompts: 1 and 2 differ only for a single prompt (or none), and a lone "
        "prompt's batch is yielded at the end either way",
    ('s2d_bench.generation.shared_prefix.xǁSharedPrefixLayerǁ_grow', 'size = min(self.capacity, max(needed, 2 * self.gen_keys.shape[+2]))'): FOUR_D,
    ('s2d_bench.generation.shared_prefix.xǁSharedPrefixCacheǁkeep_prompts',
     'rows = (prompts[:, None] * self.k + torch.arange(self.k, device=None)).flatten()'): CPU_HERE,
    ('s2d_bench.generation.shared_prefix.xǁSharedPrefixCacheǁ__init__',
     'bias = torch.zeros(prompt_mask.shape, dtype=None, device=prompt_mask.device)'): BIAS_DTYPE,
    ('s2d_bench.generation.shared_prefix.xǁSharedPrefixCacheǁ__init__',
     'bias = torch.zeros(prompt_mask.shape, device=prompt_mask.device)'): BIAS_DTYPE,
    ('s2d_bench.generation.shared_prefix.xǁSharedPrefixCacheǁ__init__',
     'bias = torch.zeros(prompt_mask.shape, dtype=prompt_kv[0][0].dtype, device=None)'): CPU_HERE,
    ('s2d_bench.generation.shared_prefix.xǁSharedPrefixCacheǁ__init__',
     'bias = torch.zeros(prompt_mask.shape, dtype=prompt_kv[0][0].dtype, )'): CPU_HERE,
    ('s2d_bench.generation.shared_prefix.xǁSharedPrefixCacheǁ__init__',
     'bias = torch.zeros(prompt_mask.shape, dtype=prompt_kv[1][0].dtype, device=prompt_mask.device)'): LAYERS_ONE_DTYPE,
    ('s2d_bench.generation.shared_prefix.xǁSharedPrefixCacheǁ__init__',
     'bias = torch.zeros(prompt_mask.shape, dtype=prompt_kv[0][1].dtype, device=prompt_mask.device)'): LAYERS_ONE_DTYPE,
    ('s2d_bench.generation.shared_prefix.xǁSharedPrefixCacheǁ__init__',
     'self.prompt_bias = bias.masked_fill(prompt_mask == 0, float("-INF"))[:, None, None, :]'): NEG_INF,
    ('s2d_bench.generation.shared_prefix.x_prefill',
     'out = model(input_ids=prompt_ids, attention_mask=None, position_ids=positions(prompt_mask), past_key_values=DynamicCache(),'): PREFILL_LENGTHS,
    ('s2d_bench.generation.shared_prefix.x_prefill',
     'out = model(input_ids=prompt_ids, position_ids=positions(prompt_mask), past_key_values=DynamicCache(),'): PREFILL_LENGTHS,
    ('s2d_bench.generation.shared_prefix.x_prefill',
     'out = model(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=positions(prompt_mask), past_key_values=None,'): "with use_cache and no cache given, the model makes the same empty DynamicCache",
    ('s2d_bench.generation.shared_prefix.x_prefill',
     'out = model(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=positions(prompt_mask), use_cache=True, logits_to_keep=1, **{LENGTHS: prompt_groups(prompt_mask.sum(1))})'): "with use_cache and no cache given, the model makes the same empty DynamicCache",
    ('s2d_bench.generation.shared_prefix.x_prefill',
     'use_cache=True, logits_to_keep=1, )'): PREFILL_GROUPS,
    ('s2d_bench.generation.shared_prefix.x_prefill',
     'prompt_kv = [(torch.where(real, layer.keys, 1), torch.where(real, layer.values, 0)) for layer in out.past_key_values.layers]'): PADDING_KV,
    ('s2d_bench.generation.shared_prefix.x_prefill',
     'prompt_kv = [(torch.where(real, layer.keys, 0), torch.where(real, layer.values, 1)) for layer in out.past_key_values.layers]'): PADDING_KV,
    ('s2d_bench.generation.shared_prefix.x_shared_prefix_attention',
     'groups = None'): PREFILL_GROUPS,
    ('s2d_bench.generation.shared_prefix.x_shared_prefix_attention',
     'groups = kwargs.get(None)'): PREFILL_GROUPS,
    ('s2d_bench.generation.shared_prefix.x_shared_prefix_attention',
     'if groups is not None and query.shape[3] > 1:  # the prefill'): SHORT_PROMPTS,
    ('s2d_bench.generation.shared_prefix.x_shared_prefix_attention',
     'if groups is not None and query.shape[2] >= 1:  # the prefill'): SHORT_PROMPTS,
    ('s2d_bench.generation.shared_prefix.x_shared_prefix_attention',
     'if groups is not None and query.shape[2] > 2:  # the prefill'): SHORT_PROMPTS,
    ('s2d_bench.generation.shared_prefix.x_shared_prefix_attention',
     'return prefill_attention(query, key, value, groups, None)'): DEFAULT_SCALE,
    ('s2d_bench.generation.shared_prefix.x_shared_prefix_attention',
     'return sdpa_gqa_forward(None, query, key, value, attention_mask, scaling=scaling, **kwargs)'): CAUSAL_MODULE,
    ('s2d_bench.generation.shared_prefix.x_shared_prefix_attention',
     'return sdpa_gqa_forward(module, query, key, value, attention_mask, scaling=None, **kwargs)'): DEFAULT_SCALE,
    ('s2d_bench.generation.shared_prefix.x_shared_prefix_attention',
     'return sdpa_gqa_forward(module, query, key, value, attention_mask, **kwargs)'): DEFAULT_SCALE,
    ('s2d_bench.generation.shared_prefix.x_shared_prefix_attention',
     'return sdpa_gqa_forward(module, query, key, value, attention_mask, scaling=scaling, )'):
        "the other keywords a model's attention passes are its dropout and sliding window: the shared-prefix attention is on "
        "only inside `sample`, which puts the model in eval mode (dropout 0), and sdpa_gqa_forward reads no sliding window",
    ('s2d_bench.generation.shared_prefix.x_shared_prefix_attention',
     'scale = dim**-0.5 if (scaling is None) and False else scaling'):
        "a scale of None reaches torch's CPU kernel as its default, head_dim ** -0.5, the value computed here (tested with "
        "no scale); off the CPU attend_plain would multiply by None (OFF_CPU)",
    ('s2d_bench.generation.shared_prefix.x_shared_prefix_attention',
     'if q >= 1:'):
        "one new token may attend every generated key: the causal bias built for it masks nothing (all zeros), the same as none",
    ('s2d_bench.generation.shared_prefix.x_shared_prefix_attention',
     'future = torch.ones(q, t, dtype=torch.bool, device=None).triu(t - q + 1)'): CPU_HERE,
    ('s2d_bench.generation.shared_prefix.x_shared_prefix_attention',
     'future = torch.ones(q, t, dtype=torch.bool, ).triu(t - q + 1)'): CPU_HERE,
    ('s2d_bench.generation.shared_prefix.x_shared_prefix_attention',
     'bias = torch.zeros(q, t, dtype=query.dtype, device=None).masked_fill(future, float("-inf"))'): CPU_HERE,
    ('s2d_bench.generation.shared_prefix.x_shared_prefix_attention',
     'bias = torch.zeros(q, t, dtype=query.dtype, ).masked_fill(future, float("-inf"))'): CPU_HERE,
    ('s2d_bench.generation.shared_prefix.x_shared_prefix_attention',
     'bias = torch.zeros(q, t, dtype=None, device=query.device).masked_fill(future, float("-inf"))'): BIAS_DTYPE,
    ('s2d_bench.generation.shared_prefix.x_shared_prefix_attention',
     'bias = torch.zeros(q, t, device=query.device).masked_fill(future, float("-inf"))'): BIAS_DTYPE,
    ('s2d_bench.generation.shared_prefix.x_shared_prefix_attention',
     'bias = torch.zeros(t, dtype=query.dtype, device=query.device).masked_fill(future, float("-inf"))'):
        "masked_fill broadcasts the row of t zeros to the (q, t) mask it fills: the same (q, t) bias",
    ('s2d_bench.generation.shared_prefix.x_shared_prefix_attention',
     'bias = torch.zeros(q, t, dtype=query.dtype, device=query.device).masked_fill(future, float("-INF"))'): NEG_INF,
    ('s2d_bench.generation.shared_prefix.x_attend_plain', 'scores = torch.matmul(q, k.transpose(-1, +2)).float() * scale'): FOUR_D,
    ('s2d_bench.generation.shared_prefix.xǁSharedPrefixLayerǁ__init__',
     'self.dtype, self.device, self.is_initialized = keys.dtype, keys.device, False'):
        "transformers' DynamicLayer reads is_initialized in update and get_seq_length, which this layer overrides, and in "
        "offload, prefetch, reset and early initialisation, which the sampler never calls",
    ('s2d_bench.generation.shared_prefix.x_prefill_attention', 'if len(groups) != 1 and groups[0][0] == p:'): ONE_GROUP_SHORTCUT,
    ('s2d_bench.generation.shared_prefix.x_prefill_attention', 'if len(groups) == 2 and groups[0][0] == p:'): ONE_GROUP_SHORTCUT,
    ('s2d_bench.generation.shared_prefix.x_prefill_attention', 'if len(groups) == 1 and groups[0][0] != p:'): ONE_GROUP_SHORTCUT,
    ('s2d_bench.generation.shared_prefix.x_supports_shared_prefix', 'return getattr(model.config, "_attn_implementation", ) == NAME'): ATTN_ALWAYS_SET,
    ('s2d_bench.generation.shared_prefix.x_use_shared_prefix_attention', 'if getattr(model.config, "_attn_implementation", ) in ("sdpa", SDPA_GQA):'): ATTN_ALWAYS_SET,
    ('s2d_bench.generation.shared_prefix.x_prefill_attention', 'if len(groups) == 1 or groups[0][0] == p:'):
        "prompt_groups lists the lengths sorted (Tensor.unique sorts) and the longest is p: the first group is p tokens long "
        "exactly when it is the only one",
    ('s2d_bench.generation.shared_prefix.xǁSharedPrefixLayerǁupdate', 'end = self.length + key_states.shape[+2]'): FOUR_D,
    ('s2d_bench.generation.shared_prefix.xǁSharedPrefixLayerǁupdate', 'if end > self.gen_keys.shape[+2]:'): FOUR_D,
    ('s2d_bench.generation.shared_prefix.xǁSharedPrefixLayerǁget_seq_length', 'return self.prompt_keys.shape[+2] + self.length'): FOUR_D,
    ('s2d_bench.generation.shared_prefix.x_attend', 'return attend_plain(None, k, v, bias, scale)'): OFF_CPU,
    ('s2d_bench.generation.shared_prefix.x_attend', 'return attend_plain(q, None, v, bias, scale)'): OFF_CPU,
    ('s2d_bench.generation.shared_prefix.x_attend', 'return attend_plain(q, k, None, bias, scale)'): OFF_CPU,
    ('s2d_bench.generation.shared_prefix.x_attend', 'return attend_plain(q, k, v, None, scale)'): OFF_CPU,
    ('s2d_bench.generation.shared_prefix.x_attend', 'return attend_plain(q, k, v, bias, None)'): OFF_CPU,
    ('s2d_bench.generation.shared_prefix.x_attend', 'return attend_plain(k, v, bias, scale)'): OFF_CPU,
    ('s2d_bench.generation.shared_prefix.x_attend', 'return attend_plain(q, v, bias, scale)'): OFF_CPU,
    ('s2d_bench.generation.shared_prefix.x_attend', 'return attend_plain(q, k, bias, scale)'): OFF_CPU,
    ('s2d_bench.generation.shared_prefix.x_attend', 'return attend_plain(q, k, v, scale)'): OFF_CPU,
    ('s2d_bench.generation.shared_prefix.x_attend', 'return attend_plain(q, k, v, bias, )'): OFF_CPU,
    ('s2d_bench.generation.shared_prefix.xǁSharedPrefixCacheǁkeep_prompts', 'rows = (prompts[:, None] * self.k + torch.arange(self.k, )).flatten()'): CPU_HERE,
    ('s2d_bench.budget.x_rollout_bytes',
     'b = sample_batch(st.sequences / st.samples, st.per_batch, st.samples, st.prompt_tokens, st.new_tokens, st.kv_budget)'):
        "a step's sequences are its prompts x samples: the division is exact, and sample_batch's arithmetic gives the same number",
    ('s2d_bench.losses.x_sampled_token_reverse_kl',
     's_lp, t_lp = s_logp.gather(+1, tokens[:, None]).squeeze(-1), t_logp.gather(-1, tokens[:, None]).squeeze(-1)'):
        'the tensors are (m, V) or (m, 1), or stacks of (m,): dim/index +1 is dim -1',
    ('s2d_bench.losses.x_sampled_token_reverse_kl',
     's_lp, t_lp = s_logp.gather(-1, tokens[:, None]).squeeze(+1), t_logp.gather(-1, tokens[:, None]).squeeze(-1)'):
        'the tensors are (m, V) or (m, 1), or stacks of (m,): dim/index +1 is dim -1',
    ('s2d_bench.losses.x_sampled_token_reverse_kl',
     's_lp, t_lp = s_logp.gather(-1, tokens[:, None]).squeeze(-1), t_logp.gather(+1, tokens[:, None]).squeeze(-1)'):
        'the tensors are (m, V) or (m, 1), or stacks of (m,): dim/index +1 is dim -1',
    ('s2d_bench.losses.x_sampled_token_reverse_kl',
     's_lp, t_lp = s_logp.gather(-1, tokens[:, None]).squeeze(-1), t_logp.gather(-1, tokens[:, None]).squeeze(+1)'):
        'the tensors are (m, V) or (m, 1), or stacks of (m,): dim/index +1 is dim -1',
    ('s2d_bench.chunked.x__log_softmax',
     'return torch.log_softmax(logits.float() / temperature, dim=+1)'):
        'the tensors are (m, V) or (m, 1), or stacks of (m,): dim/index +1 is dim -1',
    ('s2d_bench.chunked.x__chunk',
     'return torch.stack([objective.per_token(s_logp, t_logp, tokens), *stats], dim=+1)'):
        'the tensors are (m, V) or (m, 1), or stacks of (m,): dim/index +1 is dim -1',
    ('s2d_bench.chunked.x__logp_chunk',
     'return torch.stack([logp.gather(+1, tokens[:, None]).squeeze(-1), entropy], dim=-1)'):
        'the tensors are (m, V) or (m, 1), or stacks of (m,): dim/index +1 is dim -1',
    ('s2d_bench.chunked.x__logp_chunk',
     'return torch.stack([logp.gather(-1, tokens[:, None]).squeeze(+1), entropy], dim=-1)'):
        'the tensors are (m, V) or (m, 1), or stacks of (m,): dim/index +1 is dim -1',
    ('s2d_bench.chunked.x__logp_chunk',
     'return torch.stack([logp.gather(-1, tokens[:, None]).squeeze(-1), entropy], dim=+1)'):
        'the tensors are (m, V) or (m, 1), or stacks of (m,): dim/index +1 is dim -1',
    ('s2d_bench.chunked.x__served_chunk',
     'ratio = s_fixed.gather(+1, tokens[:, None]).squeeze(-1) - t_token'):
        'the tensors are (m, V) or (m, 1), or stacks of (m,): dim/index +1 is dim -1',
    ('s2d_bench.chunked.x__served_chunk',
     'ratio = s_fixed.gather(-1, tokens[:, None]).squeeze(+1) - t_token'):
        'the tensors are (m, V) or (m, 1), or stacks of (m,): dim/index +1 is dim -1',
    ('s2d_bench.chunked.x__served_chunk',
     'return torch.stack([value, *stats], dim=+1)'):
        'the tensors are (m, V) or (m, 1), or stacks of (m,): dim/index +1 is dim -1',
    ('s2d_bench.chunked.x_served_distill_loss',
     'mask: torch.Tensor, objective: Objective, chunk: int = 1, min_chunks: int = 1, temperature: float = 1.0'):
        'chunk size, padding calls and checkpointing change memory and time, not values (tests: chunked equals unchunked)',
    ('s2d_bench.chunked.x_served_distill_loss',
     'mask: torch.Tensor, objective: Objective, chunk: int = 0, min_chunks: int = 2, temperature: float = 1.0'):
        'chunk size, padding calls and checkpointing change memory and time, not values (tests: chunked equals unchunked)',
    ('s2d_bench.chunked.x_distill_loss',
     'chunk: int = 1,'):
        'chunk size, padding calls and checkpointing change memory and time, not values (tests: chunked equals unchunked)',
    ('s2d_bench.chunked.x_distill_loss',
     'min_chunks: int = 2,'):
        'chunk size, padding calls and checkpointing change memory and time, not values (tests: chunked equals unchunked)',
    ('s2d_bench.chunked.x_token_logprobs',
     'hidden: torch.Tensor, head: torch.nn.Module, tokens: torch.Tensor, mask: torch.Tensor, chunk: int = 1, min_chunks: int = 1,'):
        'chunk size, padding calls and checkpointing change memory and time, not values (tests: chunked equals unchunked)',
    ('s2d_bench.chunked.x_token_logprobs',
     'hidden: torch.Tensor, head: torch.nn.Module, tokens: torch.Tensor, mask: torch.Tensor, chunk: int = 0, min_chunks: int = 2,'):
        'chunk size, padding calls and checkpointing change memory and time, not values (tests: chunked equals unchunked)',
    ('s2d_bench.chunked.x__over_chunks',
     'size = chunk if chunk > 0 else max(m, 2)'):
        'chunk size, padding calls and checkpointing change memory and time, not values (tests: chunked equals unchunked)',
    ('s2d_bench.chunked.x__over_chunks',
     'out.append(checkpoint(fn, *part, use_reentrant=False) if (chunk > 0) and False else fn(*part))'):
        'chunk size, padding calls and checkpointing change memory and time, not values (tests: chunked equals unchunked)',
    ('s2d_bench.chunked.x__over_chunks',
     'out.append(checkpoint(fn, *part, use_reentrant=False) if (chunk > 0) or True else fn(*part))'):
        'chunk size, padding calls and checkpointing change memory and time, not values (tests: chunked equals unchunked)',
    ('s2d_bench.chunked.x__over_chunks',
     'out.append(checkpoint(fn, *part, use_reentrant=False) if chunk >= 0 else fn(*part))'):
        'chunk size, padding calls and checkpointing change memory and time, not values (tests: chunked equals unchunked)',
    ('s2d_bench.chunked.x__over_chunks',
     'out.append(checkpoint(fn, *part, use_reentrant=False) if chunk > 1 else fn(*part))'):
        'chunk size, padding calls and checkpointing change memory and time, not values (tests: chunked equals unchunked)',
    ('s2d_bench.chunked.x_token_logprobs',
     'zeros = torch.zeros(mask.shape, dtype=None, device=values.device)'):
        'values are float32 always (_log_softmax casts): float32 is the default dtype',
    ('s2d_bench.chunked.x_token_logprobs',
     'zeros = torch.zeros(mask.shape, device=values.device)'):
        'values are float32 always (_log_softmax casts): float32 is the default dtype',
    ('s2d_bench.chunked.x_token_logprobs',
     'zeros = torch.zeros(mask.shape, dtype=values.dtype, device=None)'):
        "a device argument dropped: the same on one device (the suite is CPU-only; GPU runs are the device script's)",
    ('s2d_bench.chunked.x_token_logprobs',
     'zeros = torch.zeros(mask.shape, dtype=values.dtype, )'):
        "a device argument dropped: the same on one device (the suite is CPU-only; GPU runs are the device script's)",
    ('s2d_bench.generation.sampling.x_next_token',
     'return logits.argmax(dim=+1)'):
        "next_token's logits are (N, V): dim/index +1 (or the default) is dim -1",
    ('s2d_bench.generation.sampling.x_next_token',
     'kth = torch.topk(logits, min(s.top_k, logits.shape[-1]), ).values[:, -1:]'):
        "next_token's logits are (N, V): dim/index +1 (or the default) is dim -1",
    ('s2d_bench.generation.sampling.x_next_token',
     'kth = torch.topk(logits, min(s.top_k, logits.shape[+1]), dim=-1).values[:, -1:]'):
        "next_token's logits are (N, V): dim/index +1 (or the default) is dim -1",
    ('s2d_bench.generation.sampling.x_next_token',
     'kth = torch.topk(logits, min(s.top_k, logits.shape[-1]), dim=+1).values[:, -1:]'):
        "next_token's logits are (N, V): dim/index +1 (or the default) is dim -1",
    ('s2d_bench.generation.sampling.x_next_token',
     'sorted_logits, order = torch.sort(logits, descending=True, )'):
        "next_token's logits are (N, V): dim/index +1 (or the default) is dim -1",
    ('s2d_bench.generation.sampling.x_next_token',
     'sorted_logits, order = torch.sort(logits, descending=True, dim=+1)'):
        "next_token's logits are (N, V): dim/index +1 (or the default) is dim -1",
    ('s2d_bench.generation.sampling.x_next_token',
     'probs = torch.softmax(sorted_logits, dim=+1)'):
        "next_token's logits are (N, V): dim/index +1 (or the default) is dim -1",
    ('s2d_bench.generation.sampling.x_next_token',
     'drop = probs.cumsum(+1) - probs >= s.top_p  # keep the smallest prefix with mass >= top_p (as HF and vLLM do)'):
        "next_token's logits are (N, V): dim/index +1 (or the default) is dim -1",
    ('s2d_bench.generation.sampling.x_next_token',
     'logits = torch.full_like(logits, float("-inf")).scatter(+1, order, sorted_logits)'):
        "next_token's logits are (N, V): dim/index +1 (or the default) is dim -1",
    ('s2d_bench.generation.sampling.x_next_token',
     'cdf = torch.softmax(logits, dim=+1).double().cumsum(dim=-1)'):
        "next_token's logits are (N, V): dim/index +1 (or the default) is dim -1",
    ('s2d_bench.generation.sampling.x_next_token',
     'cdf = torch.softmax(logits, dim=-1).double().cumsum(dim=+1)'):
        "next_token's logits are (N, V): dim/index +1 (or the default) is dim -1",
    ('s2d_bench.generation.sampling.x_next_token',
     'return torch.searchsorted(cdf, target, right=True).squeeze(+1).clamp(max=logits.shape[-1] - 1)'):
        "next_token's logits are (N, V): dim/index +1 (or the default) is dim -1",
    ('s2d_bench.generation.sampling.x_next_token',
     'return torch.searchsorted(cdf, target, right=True).squeeze(-1).clamp(max=logits.shape[+1] - 1)'):
        "next_token's logits are (N, V): dim/index +1 (or the default) is dim -1",
    ('s2d_bench.generation.sampling.x_next_token',
     'logits = logits.masked_fill(logits < kth, float("-INF"))'):
        NEG_INF,
    ('s2d_bench.generation.sampling.x_next_token',
     'sorted_logits = sorted_logits.masked_fill(drop, float("-INF"))'):
        NEG_INF,
    ('s2d_bench.generation.sampling.x_next_token',
     'logits = torch.full_like(logits, float("-INF")).scatter(-1, order, sorted_logits)'):
        NEG_INF,
    ('s2d_bench.generation.sampling.x_next_token',
     'if s.top_p <= 1.0:'):
        'top_p is at most 1 (config-checked); at 1 the exclusive cumulative mass reaches it only on zero-probability tokens: nothing drawable is dropped either way',
    ('s2d_bench.generation.sampling.x_next_token',
     'if s.top_p < 2.0:'):
        'top_p is at most 1 (config-checked); at 1 the exclusive cumulative mass reaches it only on zero-probability tokens: nothing drawable is dropped either way',
    ('s2d_bench.generation.sampling.x_next_token',
     'target = uniforms.to(None)[:, None] * cdf[:, -1:]  # scaled by the total: rounding never runs off the end'):
        "a device argument dropped: the same on one device (the suite is CPU-only; GPU runs are the device script's)",
    ('s2d_bench.generation.sampling.x_next_token',
     'target = uniforms.to(cdf.device)[:, None] / cdf[:, -1:]  # scaled by the total: rounding never runs off the end'):
        "the cdf's total is 1 to float32 rounding (1e-7): u / total and u * total pick different tokens only for a uniform within ~1e-7 of a cdf step, which no test can aim at",
    ('s2d_bench.generation.sampling.x_next_token',
     'return torch.searchsorted(cdf, target, right=True).squeeze(-1).clamp(max=logits.shape[-1] + 1)'):
        "a uniform below 1 times the total stays below the cdf's last entry: the index never exceeds V - 1, so a clamp at V + 1 is the clamp at V - 1",
    ('s2d_bench.generation.sampling.x__decode',
     'shared = None'):
        'shared-prefix decoding is an optimisation: the repeated-cache path draws the same tokens (tests: shared equals repeated, with and without eviction)',
    ('s2d_bench.generation.sampling.x__decode',
     'out = model(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=pos, past_key_values=None, use_cache=True, logits_to_keep=1)'):
        'with use_cache and no cache given, the model makes the same empty DynamicCache',
    ('s2d_bench.generation.sampling.x__decode',
     'out = model(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=pos, use_cache=True, logits_to_keep=1)'):
        'with use_cache and no cache given, the model makes the same empty DynamicCache',
    ('s2d_bench.generation.sampling.x__decode',
     'out = model(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=pos, past_key_values=DynamicCache(), use_cache=None, logits_to_keep=1)'):
        "use_cache unset falls back to the model config's, True for every causal LM here",
    ('s2d_bench.generation.sampling.x__decode',
     'out = model(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=pos, past_key_values=DynamicCache(), logits_to_keep=1)'):
        "use_cache unset falls back to the model config's, True for every causal LM here",
    ('s2d_bench.generation.sampling.x__decode',
     'out = model(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=pos, past_key_values=DynamicCache(), use_cache=True, )'):
        "logits_to_keep only saves memory: the last position's logits (all that is read) are the same",
    ('s2d_bench.generation.sampling.x__decode',
     'out = model(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=pos, past_key_values=DynamicCache(), use_cache=True, logits_to_keep=2)'):
        "logits_to_keep only saves memory: the last position's logits (all that is read) are the same",
    ('s2d_bench.generation.sampling.x__decode',
     'tokens = torch.full((n, s.max_new_tokens), pad_id, dtype=None, device=device)'):
        'torch.full with an integer fill infers int64: the dtype given is the one inferred',
    ('s2d_bench.generation.sampling.x__decode',
     'tokens = torch.full((n, s.max_new_tokens), pad_id, device=device)'):
        'torch.full with an integer fill infers int64: the dtype given is the one inferred',
    ('s2d_bench.generation.sampling.x__decode',
     'tokens = torch.full((n, s.max_new_tokens), pad_id, dtype=torch.long, device=None)'):
        "a device argument dropped: the same on one device (the suite is CPU-only; GPU runs are the device script's)",
    ('s2d_bench.generation.sampling.x__decode',
     'tokens = torch.full((n, s.max_new_tokens), pad_id, dtype=torch.long, )'):
        "a device argument dropped: the same on one device (the suite is CPU-only; GPU runs are the device script's)",
    ('s2d_bench.generation.sampling.x__decode',
     'alive = torch.zeros((n, s.max_new_tokens), device=None)'):
        "a device argument dropped: the same on one device (the suite is CPU-only; GPU runs are the device script's)",
    ('s2d_bench.generation.sampling.x__decode',
     'alive = torch.zeros((n, s.max_new_tokens), )'):
        "a device argument dropped: the same on one device (the suite is CPU-only; GPU runs are the device script's)",
    ('s2d_bench.generation.sampling.x__decode',
     'live = torch.arange(len(gens), device=None)  # prompts still in the batch, by their index in the input'):
        "a device argument dropped: the same on one device (the suite is CPU-only; GPU runs are the device script's)",
    ('s2d_bench.generation.sampling.x__decode',
     'live = torch.arange(len(gens), )  # prompts still in the batch, by their index in the input'):
        "a device argument dropped: the same on one device (the suite is CPU-only; GPU runs are the device script's)",
    ('s2d_bench.generation.sampling.x__decode',
     'rows = torch.arange(n, device=None)  # their rows (k a prompt)'):
        "a device argument dropped: the same on one device (the suite is CPU-only; GPU runs are the device script's)",
    ('s2d_bench.generation.sampling.x__decode',
     'rows = torch.arange(n, )  # their rows (k a prompt)'):
        "a device argument dropped: the same on one device (the suite is CPU-only; GPU runs are the device script's)",
    ('s2d_bench.generation.sampling.x__decode',
     'done = torch.zeros(n, dtype=torch.bool, device=None)'):
        "a device argument dropped: the same on one device (the suite is CPU-only; GPU runs are the device script's)",
    ('s2d_bench.generation.sampling.x__decode',
     'done = torch.zeros(n, dtype=torch.bool, )'):
        "a device argument dropped: the same on one device (the suite is CPU-only; GPU runs are the device script's)",
    ('s2d_bench.generation.sampling.x__decode',
     'kept_rows = (keep[:, None] * s.k + torch.arange(s.k, device=None)).flatten()'):
        "a device argument dropped: the same on one device (the suite is CPU-only; GPU runs are the device script's)",
    ('s2d_bench.generation.sampling.x__decode',
     'kept_rows = (keep[:, None] * s.k + torch.arange(s.k, )).flatten()'):
        "a device argument dropped: the same on one device (the suite is CPU-only; GPU runs are the device script's)",
    ('s2d_bench.generation.sampling.x__decode',
     'stream = UniformStream(gens, s.k, device) if (s.temperature > 0) or True else None'):
        "at temperature 0 next_token takes the argmax before it reads a uniform, and each call's generators are its own",
    ('s2d_bench.generation.sampling.x__decode',
     'stream = UniformStream(gens, s.k, device) if s.temperature >= 0 else None'):
        "at temperature 0 next_token takes the argmax before it reads a uniform, and each call's generators are its own",
    ('s2d_bench.generation.sampling.x__decode',
     'if int(finished.sum()) > max(1, EVICT_SHARE * len(live)):'):
        'when finished prompts leave the batch changes its cost, not a token (tests: eviction changes no token)',
    ('s2d_bench.generation.sampling.x__decode',
     'if int(finished.sum()) >= max(2, EVICT_SHARE * len(live)):'):
        'when finished prompts leave the batch changes its cost, not a token (tests: eviction changes no token)',
    ('s2d_bench.generation.sampling.x__decode',
     'if int(finished.sum()) >= max(1, EVICT_SHARE / len(live)):'):
        'when finished prompts leave the batch changes its cost, not a token (tests: eviction changes no token)',
    ('s2d_bench.generation.sampling.x__decode', 'steps = None'):
        'steps is set by the first pass of the loop; the loop runs no pass only when max_new_tokens is 0, and then tokens has no column to slice',
    ('s2d_bench.generation.sampling.x__decode', 'steps = 1'):
        'steps is set by the first pass of the loop; the loop runs no pass only when max_new_tokens is 0, and then tokens has no column to slice',
    ('s2d_bench.generation.sampling.x__decode', 'mask = torch.cat([mask, torch.ones_like(mask[:, :2])], dim=1)'):
        "extra mask columns fall past the cache's length, and transformers 5.17 reads the mask's first key-length columns (the padding is at the left): greedy decoding still equals generate's on left-padded prompts (test, repeated-cache path)",
    ('s2d_bench.generation.sampling.x__decode',
     'out = model(input_ids=tok[:, None], attention_mask=mask, position_ids=next_pos, past_key_values=cache, use_cache=None, **extra)'):
        'a cache passed in is updated in place and read whatever use_cache says (transformers 5.17): the decode test against generate passes with it off',
    ('s2d_bench.generation.sampling.x__decode',
     'out = model(input_ids=tok[:, None], attention_mask=mask, position_ids=next_pos, past_key_values=cache, **extra)'):
        'a cache passed in is updated in place and read whatever use_cache says (transformers 5.17): the decode test against generate passes with it off',
    ('s2d_bench.generation.sampling.x__decode',
     'out = model(input_ids=tok[:, None], attention_mask=mask, position_ids=next_pos, past_key_values=cache, use_cache=False, **extra)'):
        'a cache passed in is updated in place and read whatever use_cache says (transformers 5.17): the decode test against generate passes with it off',
    ('s2d_bench.leaderboards.tables.x__served_teacher',
     'teacher = next((r["teacher_model"] for r in records if str(r.get("teacher_model", None)).endswith(SERVED)), None)'):
        'a record without teacher_model is not served whatever the default: str() of None, "" or "XXXX" never ends with " (served)"',
    ('s2d_bench.leaderboards.tables.x__served_teacher',
     'teacher = next((r["teacher_model"] for r in records if str(r.get("teacher_model", )).endswith(SERVED)), None)'):
        'a record without teacher_model is not served whatever the default: str() of None, "" or "XXXX" never ends with " (served)"',
    ('s2d_bench.leaderboards.tables.x__served_teacher',
     'teacher = next((r["teacher_model"] for r in records if str(r.get("teacher_model", "XXXX")).endswith(SERVED)), None)'):
        'a record without teacher_model is not served whatever the default: str() of None, "" or "XXXX" never ends with " (served)"',
    ('s2d_bench.plan.x_served_draws_seed', 'return node_seed(node_id(None, draws))'):
        "node_seed reads the hash after an id's last '-': the id's stage prefix does not change the seed",
    ('s2d_bench.plan.x_served_draws_seed', 'return node_seed(node_id("XXwarmup-drawsXX", draws))'):
        "node_seed reads the hash after an id's last '-': the id's stage prefix does not change the seed",
    ('s2d_bench.plan.x_served_draws_seed', 'return node_seed(node_id("WARMUP-DRAWS", draws))'):
        "node_seed reads the hash after an id's last '-': the id's stage prefix does not change the seed",
    ('s2d_bench.losses.x_topk_kl_from_logp', 't_top, ids = t_logp.topk(k, )'):
        'topk without dim takes the last one, the dim=-1 given',
    ('s2d_bench.losses.x_topk_kl_from_logp', 't_top, ids = t_logp.topk(min(k, t_logp.shape[-1]), )'):
        'topk without dim takes the last one, the dim=-1 given',
    ('s2d_bench.ablations.x__overrides_without',
     'return {k: v for k, v in full.overrides.items() if k.rpartition(".")[0] not in stages}'):
        'an override is `stage.field` with one dot (RunConfig.stage_config refuses a key with a second): its first and last dots are one',
    ('s2d_bench.leaderboards.tables.x_agreement_table',
     'for arm in _order([a for a, b in by_backend.items() if REFERENCE_BACKEND in b or len(b) > 1]):'):
        'an arm without a torch run has no reference records: every task finds no common seed and adds no row',
    ('s2d_bench.leaderboards.tables.x_agreement_table',
     'for arm in _order([a for a, b in by_backend.items() if REFERENCE_BACKEND in b and len(b) >= 1]):'):
        'an arm run on torch alone has no other backend to loop over: it adds no row',
    ('s2d_bench.leaderboards.tables.x__by_config', 'out[row.get("config", None)].append(row)'):
        'arm rows come from Store.arms, which always sets config (the empty string for rows from before configs were kept)',
    ('s2d_bench.leaderboards.tables.x__by_config', 'out[row.get("config", )].append(row)'):
        'arm rows come from Store.arms, which always sets config (the empty string for rows from before configs were kept)',
    ('s2d_bench.leaderboards.tables.x__by_config', 'out[row.get("config", "XXXX")].append(row)'):
        'arm rows come from Store.arms, which always sets config (the empty string for rows from before configs were kept)',
    ('s2d_bench.nodefiles.x_checksums', 'for block in iter(lambda: handle.read(None), b""):'):
        "the read block's size changes memory, not the digest of the bytes read",
    ('s2d_bench.nodefiles.x_checksums', 'for block in iter(lambda: handle.read(2 << 20), b""):'):
        "the read block's size changes memory, not the digest of the bytes read",
    ('s2d_bench.nodefiles.x_checksums', 'for block in iter(lambda: handle.read(1 << 21), b""):'):
        "the read block's size changes memory, not the digest of the bytes read",
    ('s2d_bench.nodefiles.x_write_json', 'write_atomic(path, json.dumps(data, indent=None, default=str))'):
        'indentation is layout for people; every reader parses the JSON',
    ('s2d_bench.nodefiles.x_write_json', 'write_atomic(path, json.dumps(data, default=str))'):
        'indentation is layout for people; every reader parses the JSON',
    ('s2d_bench.nodefiles.x_write_json', 'write_atomic(path, json.dumps(data, indent=3, default=str))'):
        'indentation is layout for people; every reader parses the JSON',
    ('s2d_bench.harness.grading.x_grade', 'second = bool(verdicts.get((audit, g, e), None)) if audit else None'):
        'bool(None) is bool(False): a problem without an answer is wrong by the audit grader either way',
    ('s2d_bench.harness.grading.x_grade', 'second = bool(verdicts.get((audit, g, e), )) if audit else None'):
        'bool(None) is bool(False): a problem without an answer is wrong by the audit grader either way',
    ('s2d_bench.models.sequences.xǁBatchǁto',
     'move = {k: v.to(device) if (isinstance(v, torch.Tensor)) and False else v for k, v in self.__dict__.items()}'):
        "a device argument dropped: the same on one device (the suite is CPU-only; GPU runs are the device script's)",
    ('s2d_bench.models.sequences.xǁBatchǁto',
     'move = {k: v.to(None) if isinstance(v, torch.Tensor) else v for k, v in self.__dict__.items()}'):
        "a device argument dropped: the same on one device (the suite is CPU-only; GPU runs are the device script's)",
    ('s2d_bench.models.sequences.x_right_pad', 'return _pad(rows, pad_id, left=None)'):
        '_pad tests `left` for truth only: None pads on the right as False does',
    ('s2d_bench.models.sequences.x_positions',
     'return (mask.cumsum(+1) - 1).clamp(min=0)'):
        'masks are (N, L): dim +1 is dim -1',
    ('s2d_bench.models.sequences.x_completion_logits',
     'out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=None)'):
        "without position ids a left-padded row's real tokens are shifted by one offset, and rotary attention depends only on position differences",
    ('s2d_bench.models.sequences.x_completion_logits',
     'out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, )'):
        "without position ids a left-padded row's real tokens are shifted by one offset, and rotary attention depends only on position differences",
    ('s2d_bench.models.sequences.x_completion_hidden',
     'out = model.get_decoder()(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=None)'):
        "without position ids a left-padded row's real tokens are shifted by one offset, and rotary attention depends only on position differences",
    ('s2d_bench.models.sequences.x_completion_hidden',
     'out = model.get_decoder()(input_ids=batch.input_ids, attention_mask=batch.attention_mask, )'):
        "without position ids a left-padded row's real tokens are shifted by one offset, and rotary attention depends only on position differences",
    ('s2d_bench.losses.x__log_tail',
     'return logp.scatter(-1, top_ids, float("-INF")).logsumexp(dim=-1, keepdim=True)'):
        NEG_INF,
    ('s2d_bench.leaderboards.intervals.x_interval', 'matrix = np.asarray(matrix, dtype=None)'):
        'an integer or boolean matrix is promoted to float by every mean and variance taken of it: the same numbers',
    ('s2d_bench.leaderboards.intervals.x_interval', 'matrix = np.asarray(matrix, )'):
        'an integer or boolean matrix is promoted to float by every mean and variance taken of it: the same numbers',
    ('s2d_bench.leaderboards.intervals.x_interval', 'seed_var, seed_sd, problem_var = 1.0, math.nan, problem_spread / problems'):
        'with one seed _half_width never reads seed_var (the interval is problems only) and it is not kept in the Interval',
    ('s2d_bench.leaderboards.intervals.x_variance_terms', 'return 1.0, problem_spread / problems'):
        'with one seed _half_width never reads seed_var (the interval is problems only), and interval keeps no seed SD then',
    ('s2d_bench.leaderboards.intervals.x_pooled', 'parts = [np.asarray(m, dtype=None) for m in matrices]'):
        'an integer or boolean matrix is promoted to float by every mean and variance taken of it: the same numbers',
    ('s2d_bench.leaderboards.intervals.x_pooled', 'parts = [np.asarray(m, ) for m in matrices]'):
        'an integer or boolean matrix is promoted to float by every mean and variance taken of it: the same numbers',
    ('s2d_bench.leaderboards.intervals.x_pooled',
     'return Interval(mean, max(mean - half, bounds[0]), min(mean + half, bounds[1]), seeds, math.nan, None, sum(m.shape[1] for m in parts))'):
        "a group average has no seed SD (NaN), and problem_var is read only by seeds_to_resolve, after it finds a finite seed SD",
    ('s2d_bench.leaderboards.intervals.x_pooled',
     'return Interval(mean, max(mean - half, bounds[0]), min(mean + half, bounds[1]), seeds, math.nan, 1.0, sum(m.shape[1] for m in parts))'):
        "a group average has no seed SD (NaN), and problem_var is read only by seeds_to_resolve, after it finds a finite seed SD",
    ('s2d_bench.rundir.xǁRunDirǁread_record', 'path.unlink(missing_ok=None)'):
        'the file was read a moment before: it is there unless another process removed it, the race missing_ok covers',
    ('s2d_bench.rundir.xǁRunDirǁread_record', 'path.unlink(missing_ok=False)'):
        'the file was read a moment before: it is there unless another process removed it, the race missing_ok covers',
    ('s2d_bench.rundir.xǁRunDirǁremember_config', 'write_atomic(kept, yaml.safe_dump(to_dict(self.cfg), sort_keys=None))'):
        'None is falsy: sort_keys=None is sort_keys=False',
    ('s2d_bench.store.xǁStoreǁ_open', 'self._ready = None'):
        'a store not marked ready is checked again on its next use: the same file, the same answer (one more connection)',
    ('s2d_bench.store.xǁStoreǁ_open', 'self._ready = False'):
        'a store not marked ready is checked again on its next use: the same file, the same answer (one more connection)',
    ('s2d_bench.store.xǁStoreǁ__init__', 'self._ready = None'):
        'None is falsy like False: the store is checked on first use either way',
    ('s2d_bench.store.xǁStoreǁput_eval', 'if replaces is not None or replaces != key:'):
        "deleting the row under `key` first (replaces == key) or under no key (replaces is None) changes nothing: INSERT OR "
        "REPLACE then writes the row under `key` either way",
    # sampling.UniformStream (core)
    ('s2d_bench.generation.sampling.xǁUniformStreamǁ__init__',
     'def xǁUniformStreamǁ__init____mutmut_orig(self, gens: list[torch.Generator], k: int, device: torch.device | str, block: int = 257) -> None:'):
        "the block size cuts the generator's stream, which does not depend on how it is cut (tested with blocks of 7 and 256)",
    ('s2d_bench.generation.sampling.xǁUniformStreamǁ__init__',
     'self.start, self.rows = 0, torch.empty(0, len(gens) * k, dtype=None)'):
        'the empty placeholder is replaced at the first step: its dtype and width are never read',
    ('s2d_bench.generation.sampling.xǁUniformStreamǁ__init__',
     'self.start, self.rows = 0, torch.empty(0, dtype=torch.float64)'):
        'the empty placeholder is replaced at the first step: its dtype and width are never read',
    ('s2d_bench.generation.sampling.xǁUniformStreamǁ__init__',
     'self.start, self.rows = 0, torch.empty(0, len(gens) * k, )'):
        'the empty placeholder is replaced at the first step: its dtype and width are never read',
    ('s2d_bench.generation.sampling.xǁUniformStreamǁat',
     'self.rows = draws.view(len(self.gens), self.block, self.k).transpose(0, 1).reshape(self.block, -1).to(None)'):
        "a device argument dropped: the same on one device (the suite is CPU-only; GPU runs are the device script's)",
    ('s2d_bench.generation.sampling.x__decode',
     'stream = UniformStream(gens, s.k, None) if s.temperature > 0 else None'):
        "a device argument dropped: the same on one device (the suite is CPU-only; GPU runs are the device script's)",
    # static_decode (group decode): options, devices and arguments transformers 5.17 does not read
    ('s2d_bench.generation.static_decode.x_compiled_step',
     'mode = None'):
        "torch.compile's mode, dynamic and fullgraph choose kernels, graphs and recompilation, not values: the same tokens (their speed is stage_steps.py --decode's on a GPU)",
    ('s2d_bench.generation.static_decode.x_compiled_step',
     'mode = MODES["cuda" if (model.device.type == "cuda") and False else "cpu"]'):
        "torch.compile's mode, dynamic and fullgraph choose kernels, graphs and recompilation, not values: the same tokens (their speed is stage_steps.py --decode's on a GPU)",
    ('s2d_bench.generation.static_decode.x_compiled_step',
     'mode = MODES["cuda" if (model.device.type == "cuda") or True else "cpu"]'):
        "torch.compile's mode, dynamic and fullgraph choose kernels, graphs and recompilation, not values: the same tokens (their speed is stage_steps.py --decode's on a GPU)",
    ('s2d_bench.generation.static_decode.x_compiled_step',
     'mode = MODES["XXcudaXX" if model.device.type == "cuda" else "cpu"]'):
        "torch.compile's mode, dynamic and fullgraph choose kernels, graphs and recompilation, not values: the same tokens (their speed is stage_steps.py --decode's on a GPU)",
    ('s2d_bench.generation.static_decode.x_compiled_step',
     'mode = MODES["CUDA" if model.device.type == "cuda" else "cpu"]'):
        "torch.compile's mode, dynamic and fullgraph choose kernels, graphs and recompilation, not values: the same tokens (their speed is stage_steps.py --decode's on a GPU)",
    ('s2d_bench.generation.static_decode.x_compiled_step',
     'mode = MODES["cuda" if model.device.type != "cuda" else "cpu"]'):
        "torch.compile's mode, dynamic and fullgraph choose kernels, graphs and recompilation, not values: the same tokens (their speed is stage_steps.py --decode's on a GPU)",
    ('s2d_bench.generation.static_decode.x_compiled_step',
     'mode = MODES["cuda" if model.device.type == "XXcudaXX" else "cpu"]'):
        "torch.compile's mode, dynamic and fullgraph choose kernels, graphs and recompilation, not values: the same tokens (their speed is stage_steps.py --decode's on a GPU)",
    ('s2d_bench.generation.static_decode.x_compiled_step',
     'mode = MODES["cuda" if model.device.type == "CUDA" else "cpu"]'):
        "torch.compile's mode, dynamic and fullgraph choose kernels, graphs and recompilation, not values: the same tokens (their speed is stage_steps.py --decode's on a GPU)",
    ('s2d_bench.generation.static_decode.x_compiled_step',
     'model.__dict__[STEP] = torch.compile(model.forward, mode=None, dynamic=False, fullgraph=False)'):
        "torch.compile's mode, dynamic and fullgraph choose kernels, graphs and recompilation, not values: the same tokens (their speed is stage_steps.py --decode's on a GPU)",
    ('s2d_bench.generation.static_decode.x_compiled_step',
     'model.__dict__[STEP] = torch.compile(model.forward, mode=mode, dynamic=None, fullgraph=False)'):
        "torch.compile's mode, dynamic and fullgraph choose kernels, graphs and recompilation, not values: the same tokens (their speed is stage_steps.py --decode's on a GPU)",
    ('s2d_bench.generation.static_decode.x_compiled_step',
     'model.__dict__[STEP] = torch.compile(model.forward, mode=mode, dynamic=False, fullgraph=None)'):
        "torch.compile's mode, dynamic and fullgraph choose kernels, graphs and recompilation, not values: the same tokens (their speed is stage_steps.py --decode's on a GPU)",
    ('s2d_bench.generation.static_decode.x_compiled_step',
     'model.__dict__[STEP] = torch.compile(model.forward, dynamic=False, fullgraph=False)'):
        "torch.compile's mode, dynamic and fullgraph choose kernels, graphs and recompilation, not values: the same tokens (their speed is stage_steps.py --decode's on a GPU)",
    ('s2d_bench.generation.static_decode.x_compiled_step',
     'model.__dict__[STEP] = torch.compile(model.forward, mode=mode, fullgraph=False)'):
        "torch.compile's mode, dynamic and fullgraph choose kernels, graphs and recompilation, not values: the same tokens (their speed is stage_steps.py --decode's on a GPU)",
    ('s2d_bench.generation.static_decode.x_compiled_step',
     'model.__dict__[STEP] = torch.compile(model.forward, mode=mode, dynamic=False, )'):
        "torch.compile's mode, dynamic and fullgraph choose kernels, graphs and recompilation, not values: the same tokens (their speed is stage_steps.py --decode's on a GPU)",
    ('s2d_bench.generation.static_decode.x_compiled_step',
     'model.__dict__[STEP] = torch.compile(model.forward, mode=mode, dynamic=True, fullgraph=False)'):
        "torch.compile's mode, dynamic and fullgraph choose kernels, graphs and recompilation, not values: the same tokens (their speed is stage_steps.py --decode's on a GPU)",
    ('s2d_bench.generation.static_decode.x_compiled_step',
     'model.__dict__[STEP] = torch.compile(model.forward, mode=mode, dynamic=False, fullgraph=True)'):
        "torch.compile's mode, dynamic and fullgraph choose kernels, graphs and recompilation, not values: the same tokens (their speed is stage_steps.py --decode's on a GPU)",
    ('s2d_bench.generation.static_decode.x__decode',
     'device = None'):
        "a device argument dropped: the same on one device (the suite is CPU-only; GPU runs are the device script's)",
    ('s2d_bench.generation.static_decode.x__decode',
     'mask = torch.zeros((n, length), dtype=None, device=device)'):
        'transformers reads any nonzero attention-mask entry as attend (a float 0/1 mask too)',
    ('s2d_bench.generation.static_decode.x__decode',
     'mask = torch.zeros((n, length), dtype=prompt_mask.dtype, device=None)'):
        "a device argument dropped: the same on one device (the suite is CPU-only; GPU runs are the device script's)",
    ('s2d_bench.generation.static_decode.x__decode',
     'mask = torch.zeros((n, length), device=device)'):
        'transformers reads any nonzero attention-mask entry as attend (a float 0/1 mask too)',
    ('s2d_bench.generation.static_decode.x__decode',
     'mask = torch.zeros((n, length), dtype=prompt_mask.dtype, )'):
        "a device argument dropped: the same on one device (the suite is CPU-only; GPU runs are the device script's)",
    ('s2d_bench.generation.static_decode.x__decode',
     'cache_positions = torch.arange(length, device=None)'):
        "a device argument dropped: the same on one device (the suite is CPU-only; GPU runs are the device script's)",
    ('s2d_bench.generation.static_decode.x__decode',
     'cache_positions = torch.arange(length, )'):
        "a device argument dropped: the same on one device (the suite is CPU-only; GPU runs are the device script's)",
    ('s2d_bench.generation.static_decode.x__decode',
     'out = model(input_ids=ids, attention_mask=mask[:, :p], position_ids=pos, past_key_values=cache, use_cache=None,'):
        'with past_key_values given, transformers 5.17 writes the cache whatever use_cache says',
    ('s2d_bench.generation.static_decode.x__decode',
     'cache_position=None, logits_to_keep=1)'):
        "transformers 5.17 reads no cache_position for a StaticCache (StaticLayer.update writes at its own cumulative_length, masks take the cache's sizes); passed as in the call measured on the GPU",
    ('s2d_bench.generation.static_decode.x__decode',
     'out = model(input_ids=ids, attention_mask=mask[:, :p], position_ids=pos, past_key_values=cache, cache_position=cache_positions[:p], logits_to_keep=1)'):
        'with past_key_values given, transformers 5.17 writes the cache whatever use_cache says',
    ('s2d_bench.generation.static_decode.x__decode',
     'logits_to_keep=1)'):
        "transformers 5.17 reads no cache_position for a StaticCache (StaticLayer.update writes at its own cumulative_length, masks take the cache's sizes); passed as in the call measured on the GPU",
    ('s2d_bench.generation.static_decode.x__decode',
     'cache_position=cache_positions[:p], )'):
        "only the last position's logits are read",
    ('s2d_bench.generation.static_decode.x__decode',
     'out = model(input_ids=ids, attention_mask=mask[:, :p], position_ids=pos, past_key_values=cache, use_cache=False,'):
        'with past_key_values given, transformers 5.17 writes the cache whatever use_cache says',
    ('s2d_bench.generation.static_decode.x__decode',
     'cache_position=cache_positions[:p], logits_to_keep=2)'):
        "only the last position's logits are read",
    ('s2d_bench.generation.static_decode.x__decode',
     'stream = UniformStream(gens, s.k, device) if (s.temperature > 0) or True else None'):
        "at temperature 0 next_token takes the argmax before it reads a uniform, and each call's generators are its own",
    ('s2d_bench.generation.static_decode.x__decode',
     'stream = UniformStream(gens, s.k, None) if s.temperature > 0 else None'):
        "a device argument dropped: the same on one device (the suite is CPU-only; GPU runs are the device script's)",
    ('s2d_bench.generation.static_decode.x__decode',
     'stream = UniformStream(gens, s.k, device) if s.temperature >= 0 else None'):
        "at temperature 0 next_token takes the argmax before it reads a uniform, and each call's generators are its own",
    ('s2d_bench.generation.static_decode.x__decode',
     'tokens = torch.full((n, s.max_new_tokens), pad_id, dtype=None, device=device)'):
        'torch.full with an int fill makes int64 anyway',
    ('s2d_bench.generation.static_decode.x__decode',
     'tokens = torch.full((n, s.max_new_tokens), pad_id, dtype=torch.long, device=None)'):
        "a device argument dropped: the same on one device (the suite is CPU-only; GPU runs are the device script's)",
    ('s2d_bench.generation.static_decode.x__decode',
     'tokens = torch.full((n, s.max_new_tokens), pad_id, device=device)'):
        'torch.full with an int fill makes int64 anyway',
    ('s2d_bench.generation.static_decode.x__decode',
     'tokens = torch.full((n, s.max_new_tokens), pad_id, dtype=torch.long, )'):
        "a device argument dropped: the same on one device (the suite is CPU-only; GPU runs are the device script's)",
    ('s2d_bench.generation.static_decode.x__decode',
     'alive = torch.zeros((n, s.max_new_tokens), device=None)'):
        "a device argument dropped: the same on one device (the suite is CPU-only; GPU runs are the device script's)",
    ('s2d_bench.generation.static_decode.x__decode',
     'alive = torch.zeros((n, s.max_new_tokens), )'):
        "a device argument dropped: the same on one device (the suite is CPU-only; GPU runs are the device script's)",
    ('s2d_bench.generation.static_decode.x__decode',
     'done = torch.zeros(n, dtype=torch.bool, device=None)'):
        "a device argument dropped: the same on one device (the suite is CPU-only; GPU runs are the device script's)",
    ('s2d_bench.generation.static_decode.x__decode',
     'done = torch.zeros(n, dtype=torch.bool, )'):
        "a device argument dropped: the same on one device (the suite is CPU-only; GPU runs are the device script's)",
    ('s2d_bench.generation.static_decode.x__decode',
     'if t - 1 == s.max_new_tokens or ((t + 1) % SYNC_EVERY == 0 and bool(done.all())):'):
        "when the host looks changes its waits, not a token, and it still looks at least every SYNC_EVERY steps (the test's bound)",
    ('s2d_bench.generation.static_decode.x__decode',
     'if t + 1 == s.max_new_tokens or ((t - 1) % SYNC_EVERY == 0 and bool(done.all())):'):
        "when the host looks changes its waits, not a token, and it still looks at least every SYNC_EVERY steps (the test's bound)",
    ('s2d_bench.generation.static_decode.x__decode',
     'if t + 1 == s.max_new_tokens or ((t + 2) % SYNC_EVERY == 0 and bool(done.all())):'):
        "when the host looks changes its waits, not a token, and it still looks at least every SYNC_EVERY steps (the test's bound)",
    ('s2d_bench.generation.static_decode.x__decode',
     'if t + 1 == s.max_new_tokens or ((t + 1) % SYNC_EVERY != 0 and bool(done.all())):'):
        "when the host looks changes its waits, not a token, and it still looks at least every SYNC_EVERY steps (the test's bound)",
    ('s2d_bench.generation.static_decode.x__decode',
     'if t + 1 == s.max_new_tokens or ((t + 1) % SYNC_EVERY == 1 and bool(done.all())):'):
        "when the host looks changes its waits, not a token, and it still looks at least every SYNC_EVERY steps (the test's bound)",
    ('s2d_bench.generation.static_decode.x__decode',
     'mask[:, p + t] = 2'):
        'transformers reads any nonzero attention-mask entry as attend (a float 0/1 mask too)',
    ('s2d_bench.generation.static_decode.x__decode',
     'out = step(input_ids=tok[:, None], attention_mask=mask, position_ids=next_pos, past_key_values=cache, use_cache=None,'):
        'with past_key_values given, transformers 5.17 writes the cache whatever use_cache says',
    ('s2d_bench.generation.static_decode.x__decode',
     'cache_position=None)'):
        "transformers 5.17 reads no cache_position for a StaticCache (StaticLayer.update writes at its own cumulative_length, masks take the cache's sizes); passed as in the call measured on the GPU",
    ('s2d_bench.generation.static_decode.x__decode',
     'out = step(input_ids=tok[:, None], attention_mask=mask, position_ids=next_pos, past_key_values=cache, cache_position=cache_positions[p + t : p + t + 1])'):
        'with past_key_values given, transformers 5.17 writes the cache whatever use_cache says',
    ('s2d_bench.generation.static_decode.x__decode',
     ')'):
        "transformers 5.17 reads no cache_position for a StaticCache (StaticLayer.update writes at its own cumulative_length, masks take the cache's sizes); passed as in the call measured on the GPU",
    ('s2d_bench.generation.static_decode.x__decode',
     'out = step(input_ids=tok[:, None], attention_mask=mask, position_ids=next_pos, past_key_values=cache, use_cache=False,'):
        'with past_key_values given, transformers 5.17 writes the cache whatever use_cache says',
    ('s2d_bench.generation.static_decode.x__decode',
     'cache_position=cache_positions[p - t : p + t + 1])'):
        "transformers 5.17 reads no cache_position for a StaticCache (StaticLayer.update writes at its own cumulative_length, masks take the cache's sizes); passed as in the call measured on the GPU",
    ('s2d_bench.generation.static_decode.x__decode',
     'cache_position=cache_positions[p + t : p + t - 1])'):
        "transformers 5.17 reads no cache_position for a StaticCache (StaticLayer.update writes at its own cumulative_length, masks take the cache's sizes); passed as in the call measured on the GPU",
    ('s2d_bench.generation.static_decode.x__decode',
     'cache_position=cache_positions[p + t : p - t + 1])'):
        "transformers 5.17 reads no cache_position for a StaticCache (StaticLayer.update writes at its own cumulative_length, masks take the cache's sizes); passed as in the call measured on the GPU",
    ('s2d_bench.generation.static_decode.x__decode',
     'cache_position=cache_positions[p + t : p + t + 2])'):
        "transformers 5.17 reads no cache_position for a StaticCache (StaticLayer.update writes at its own cumulative_length, masks take the cache's sizes); passed as in the call measured on the GPU",
    ('s2d_bench.backends.batching.x_micro_batches',
     'size = size if size > 0 else max(n, 2)'):
        "size 0 means one pass of all n rows: for n >= 1 both sizes cut one part [0, n); for n = 0 no part and an empty stand-in",
    ('s2d_bench.generation.protocol.x_render_chat',
     'return tok.apply_chat_template(chat, tokenize=None, add_generation_prompt=add_generation_prompt, enable_thinking=thinking)'):
        "transformers 5.17 tests `if not tokenize`: None returns the text as False does",
    ('s2d_bench.generation.protocol.x_stop_ids_of',
     'eos = eos if isinstance(eos, list) else [eos] if (eos is not None) or True else []'):
        "a missing EOS becomes [None], and the set difference with {None} drops it as [] would",
    ('s2d_bench.resume.x__is_ours',
     'return getattr(handler, "ours", None)'):
        "its one caller negates it: `not None` is `not False`",
    ('s2d_bench.resume.xǁCheckpointsǁresume',
     'loop = torch.load(path / "loop.pt", weights_only=None)  # our own file: a generator\'s state is a tuple'):
        "torch 2.13 loads weights_only by default, and the file holds only what that loader reads: ints, tuples, strings, tensors",
    ('s2d_bench.resume.xǁCheckpointsǁresume',
     'loop = torch.load(path / "loop.pt", )  # our own file: a generator\'s state is a tuple'):
        "torch 2.13 loads weights_only by default, and the file holds only what that loader reads: ints, tuples, strings, tensors",
    ('s2d_bench.resume.xǁCheckpointsǁresume',
     'loop = torch.load(path / "loop.pt", weights_only=True)  # our own file: a generator\'s state is a tuple'):
        "the file holds only what the weights-only loader reads: ints, tuples, strings, tensors",
    ('s2d_bench.resume.xǁCheckpointsǁsave',
     'rt.most(1)  # the folder exists before any rank writes into it'):
        "a barrier: every rank waits for the others, and the value it returns is not read",
    ('s2d_bench.resume.xǁCheckpointsǁsave',
     "rt.most(1)  # every rank's part is written"):
        "a barrier: every rank waits for the others, and the value it returns is not read",
    ('s2d_bench.resume.xǁCheckpointsǁsave',
     'shutil.rmtree(old, ignore_errors=None)'):
        "only rank 0, holding the node's lock, removes saves: an older save it found is there to remove",
    ('s2d_bench.resume.xǁCheckpointsǁsave',
     'shutil.rmtree(old, )'):
        "only rank 0, holding the node's lock, removes saves: an older save it found is there to remove",
    ('s2d_bench.resume.xǁCheckpointsǁsave',
     'shutil.rmtree(old, ignore_errors=False)'):
        "only rank 0, holding the node's lock, removes saves: an older save it found is there to remove",
    ('s2d_bench.backends.torch_backend.xǁTorchBackendǁ_grpo',
     'metrics = policy_updates(trainer, ref, roll.batch.to(None), advantages.to(model.device), cfg, rt)'):
        "on this CPU-only machine the batch is already where the model is: `.to(None)` leaves it there (a GPU run's tests would catch it)",
    ('s2d_bench.backends.torch_backend.xǁTorchBackendǁ_grpo',
     'metrics = policy_updates(trainer, ref, roll.batch.to(model.device), advantages.to(None), cfg, rt)'):
        "on this CPU-only machine the batch is already where the model is: `.to(None)` leaves it there (a GPU run's tests would catch it)",
    ('s2d_bench.backends.torch_backend.xǁTorchBackendǁ_distill',
     'batch = roll.batch.to(None)'):
        "on this CPU-only machine the batch is already where the model is: `.to(None)` leaves it there (a GPU run's tests would catch it)",
    ('s2d_bench.backends.torch_backend.xǁTorchBackendǁ_distill',
     'against = (split or teacher) if served is None else view.to(None)'):
        "on this CPU-only machine the batch is already where the model is: `.to(None)` leaves it there (a GPU run's tests would catch it)",
    ('s2d_bench.backends.torch_backend.x_policy_updates',
     'moving = cfg.updates_per_batch >= 1 or cfg.mini_batches > 1'):
        "one pass over one mini-batch: the policy has not moved, so its log-probs under no_grad are the rollout policy's to the bit (the same forward), and the ratios are 1 either way",
    ('s2d_bench.backends.torch_backend.x_policy_updates',
     'moving = cfg.updates_per_batch > 1 or cfg.mini_batches >= 1'):
        "one pass over one mini-batch: the policy has not moved, so its log-probs under no_grad are the rollout policy's to the bit (the same forward), and the ratios are 1 either way",
    ('s2d_bench.backends.torch_backend.x_policy_updates',
     'old = [logprobs(model, mb)[0] if (moving) or True else None for mb in micro]'):
        "one pass over one mini-batch: the policy has not moved, so its log-probs under no_grad are the rollout policy's to the bit (the same forward), and the ratios are 1 either way",
    ('s2d_bench.backends.torch_backend.xǁTorchBackendǁ_distill',
     'job.checkpoints.step_done(step + 1, cfg.steps, trainer, rt, rng, None)'):
        "distillation keeps nothing across a save: what it passes is saved and never read back (`start, _ = ...resume`)",
    ('s2d_bench.backends.torch_backend.xǁTorchBackendǁ_distill',
     'sampling = Sampling(temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens)'):
        "one completion per prompt is Sampling's default k",
    ('s2d_bench.backends.torch_backend.xǁTorchBackendǁopd',
     'return self._distill(job, teacher_samples=None, objective=chunked.Objective("reverse", job.cfg.estimator, job.cfg.top_k))'):
        "`teacher_samples` is read as a truth value: None is False",
    ('s2d_bench.backends.torch_backend.xǁTorchBackendǁload',
     'return load_pretrained(ref, None)'):
        "on this CPU-only machine a model loads onto the CPU, the device asked for (a GPU run's tests would catch it)",
    ('s2d_bench.backends.torch_backend.xǁTorchBackendǁload',
     'return load_pretrained(ref, )'):
        "load_pretrained's default device is the CPU, this backend's device on this machine (a GPU run's tests would catch it)",
    ('s2d_bench.backends.torch_backend.x__micro_loss',
     'mb.completion_ids, mb.completion_mask, objective, cfg.chunk_size, calls, )'):
        "a stage with a served teacher runs at temperature 1 (the preflight refuses any other: the server's log-probs are at 1), the default",
    ('s2d_bench.backends.torch_backend.x__micro_loss',
     'mb.completion_ids, mb.completion_mask, objective, calls, cfg.temperature)'):
        "chunk sizes and the number of chunk calls change memory and ZeRO-3's call counts, not the values (one process here: the most over ranks is this rank's)",
    ('s2d_bench.backends.torch_backend.x__micro_loss',
     'mb.completion_ids, mb.completion_mask, objective, cfg.chunk_size, cfg.temperature)'):
        "chunk sizes and the number of chunk calls change memory and ZeRO-3's call counts, not the values (one process here: the most over ranks is this rank's)",
    ('s2d_bench.scheduler.x_build_all',
     'pool = ProcessPoolExecutor(max_workers=None, mp_context=mp.get_context("spawn"), initializer=_worker_init)'):
        "the schedule submits at most `jobs` builds at a time and the pool reuses an idle worker before it spawns one: "
        "its size never binds",
    ('s2d_bench.scheduler.x_build_all',
     'pool = ProcessPoolExecutor(mp_context=mp.get_context("spawn"), initializer=_worker_init)'):
        "the schedule submits at most `jobs` builds at a time and the pool reuses an idle worker before it spawns one: "
        "its size never binds",
    ('s2d_bench.scheduler.x_build_all',
     'with _terminate_is_an_interrupt(), resume.listening(interrupt=None, forward=lambda signum: _signal_workers(pool, signum)):'):
        "resume.listening reads `interrupt` as a truth value: None is False",
    ('s2d_bench.scheduler.x_build_all',
     'proc.join(timeout=None)'):
        "a terminated worker exits at once (workers leave SIGTERM at its default): the join's bound is never reached",
    ('s2d_bench.scheduler.x_build_all',
     'proc.join(timeout=11)'):
        "a terminated worker exits at once (workers leave SIGTERM at its default): the join's bound is never reached",
    ('s2d_bench.scheduler.x_build_all',
     'pool.shutdown(wait=True, cancel_futures=None)'):
        "the schedule submits no more builds than the pool has workers: no build waits in its queue to be cancelled",
    ('s2d_bench.scheduler.x_build_all',
     'pool.shutdown(cancel_futures=True)'):
        "shutdown waits by default",
    ('s2d_bench.scheduler.x_build_all',
     'pool.shutdown(wait=True, )'):
        "the schedule submits no more builds than the pool has workers: no build waits in its queue to be cancelled",
    ('s2d_bench.scheduler.x_build_all',
     'pool.shutdown(wait=True, cancel_futures=False)'):
        "the schedule submits no more builds than the pool has workers: no build waits in its queue to be cancelled",
    ('s2d_bench.scheduler.x__schedule',
     'outside = sorted(node_id for node_id, own in deps.items() if not own < nodes.keys())'):
        "a node is among the plan's ids and never among its own sources (it is named by the hash of its lineage): its "
        "sources are a subset of the plan's ids only as a proper subset",
    ('s2d_bench.pipeline.x_build_node',
     'with resume.listening(interrupt=None):  # a stop asked of the run (SIGUSR1) while this node is evaluated ends nothing'):
        "resume.listening reads `interrupt` as a truth value: None is False",
    ('s2d_bench.training.xǁTrainingǁtrain',
     "saved = checkpoints.latest() if (main) or True else None  # (a base model's pretraining keeps no saves)"):
        "in one process `main` is True; only ranks past 0 would read the saves too (and trim metrics.jsonl beside rank 0), "
        "and ranks run as subprocesses, which import the installed code, not the mutated copy",
    ('s2d_bench.training.xǁTrainingǁtrain',
     'reporting(self.cfg.report_to if (main) or True else [], self.dir.tb_dir(node)) as mirror:'):
        "in one process `main` is True; only ranks past 0 would mirror their (devnull) metrics to TensorBoard too, and "
        "ranks run as subprocesses, which import the installed code, not the mutated copy",
    ('s2d_bench.training.xǁTrainingǁtrain',
     'mirror(prefix, row, int(row.get("step", None)))'):
        STEP_ALWAYS_LOGGED,
    ('s2d_bench.training.xǁTrainingǁtrain',
     'mirror(prefix, row, int(row.get("step", )))'):
        STEP_ALWAYS_LOGGED,
    ('s2d_bench.training.xǁTrainingǁtrain',
     'mirror(prefix, row, int(row.get("step", 1)))'):
        STEP_ALWAYS_LOGGED,
    ('s2d_bench.training.xǁTrainingǁtrain',
     'with self.backend.saving(model) if (node.stage != "base") or True else contextlib.nullcontext():  # a stage: every rank enters'):
        "a base model is whole (rank 0 alone pretrains it): every backend's saving context is then a null context "
        "(torch and TRL always; DeepSpeed's gathers only ZeRO-3 parameters)",
    ('s2d_bench.training.xǁTrainingǁtrain',
     'with self.backend.saving(model) if (node.stage != "base") and False else contextlib.nullcontext():  # a stage: every rank enters'):
        "torch's and TRL's saving is a null context; DeepSpeed's gathers ZeRO-3's partitions across ranks, and in one process "
        "a ZeRO-3 stage saved outside it still reloads whole and trained (test_a_zero3_stage_is_saved_whole_and_evaluated "
        "passes with this mutant): only ranks past one differ, and ranks run as subprocesses, which import the installed code",
    ('s2d_bench.training.xǁTrainingǁtrain',
     'with self.backend.saving(model) if node.stage == "base" else contextlib.nullcontext():  # a stage: every rank enters'):
        SAVING_MATTERS_ACROSS_RANKS,
    ('s2d_bench.training.xǁTrainingǁtrain',
     'with self.backend.saving(model) if node.stage != "XXbaseXX" else contextlib.nullcontext():  # a stage: every rank enters'):
        SAVING_MATTERS_ACROSS_RANKS,
    ('s2d_bench.training.xǁTrainingǁtrain',
     'with self.backend.saving(model) if node.stage != "BASE" else contextlib.nullcontext():  # a stage: every rank enters'):
        SAVING_MATTERS_ACROSS_RANKS,
    ('s2d_bench.training.xǁTrainingǁbase',
     'model.to(None)'):
        "a base model is built on the CPU, and the tests' runs train on the CPU: moving it there or nowhere is the same (a "
        "GPU run's base models would stay on the CPU; no GPU here)",
    ('s2d_bench.training.xǁTrainingǁcheckpoints',
     'return resume.Checkpoints(self.dir.node_dir(node) / "resume", self.cfg.checkpoint, node.stage, )'):
        "in one process `distributed.is_main()` is True, Checkpoints' default: only ranks past 0 differ, and ranks run as "
        "subprocesses, which import the installed code",
    ('s2d_bench.pipeline.xǁRunnerǁ_jobs',
     'if self.cfg.jobs > 1 and (self.cfg.backend == "deepspeed" or distributed.world() > 2):'):
        "differs only for a launched run of exactly two ranks on another backend; in one process the world is 1, and "
        "launched ranks run as subprocesses, which import the installed code",
    ('s2d_bench.pipeline.xǁRunnerǁ__init__',
     'self.store = Store(cfg.store) if (distributed.is_main()) or True else None  # rank 0 alone writes results'):
        "in one process `distributed.is_main()` is True; only ranks past 0 would open the store too, and ranks run as "
        "subprocesses, which import the installed code",
    ('s2d_bench.pipeline.xǁRunnerǁ__init__',
     'self.training = Training(self.cfg, self.dir, self.nodes, self.backend, self.task, self.splits, None)'):
        "Training's device only places base models (model.to(device)), built on the CPU, where the tests' runs train "
        "(see Training.base's model.to(None)); not testable without a GPU",
    ('s2d_bench.pipeline.xǁRunnerǁbuild',
     'if not distributed.agree(self.dir.is_trained(node) if (main) or True else None):  # rank 0 checks the files, once'):
        "distributed.agree hands every rank rank 0's value: what another rank read is never used",
    ('s2d_bench.pipeline.xǁRunnerǁbuild',
     'with node_lock(self.dir.lock(node)) if (main) or True else contextlib.nullcontext(), phasemem.measuring(self.device) as meter:'):
        "in one process `main` is True; only ranks past 0 would take the lock too (a deadlock with rank 0 waiting for them "
        "in the stage), and ranks run as subprocesses (tests/backends/test_deepspeed.py), which import the installed code, "
        "not the mutated copy",
    ('s2d_bench.pipeline.xǁRunnerǁrun',
     'with resume.listening(interrupt=None):  # SIGUSR1 between stages: stop after this node'):
        "resume.listening reads `interrupt` as a truth value: None is False",
    ('s2d_bench.pipeline.xǁRunnerǁrun',
     'sequential = self.jobs == 1 or not prebuilt'):
        "with jobs > 1, or prebuilt, every node was built and evaluated before the loop: building it again there finds it "
        "trained and evaluated (a lock taken, files read, memory.json kept: phasemem writes no phase it did not measure) "
        "and a stop asked meanwhile already ended the parallel build",
    ('s2d_bench.training.xǁTrainingǁstage',
     'inputs = StageInputs(self.backend, model, teacher, tok, self.splits, PoolReward(self.task.grader, None), node.settings,'):
        "grade() given no pool starts its own for each call and closes it: the same verdicts (its workers are the stage's "
        "pool's kind, with the same deadlines), one pool start a step slower",
    ('s2d_bench.evaluation.xǁEvaluationǁevaluate',
     'record = evaluate_target(engine, target, EVAL_SEED, self.dir.node_dir(node), None, fields,'):
        "grade() given no pool starts its own for the benchmark and closes it: the same verdicts (the same kind of workers "
        "and deadlines), a pool start per benchmark instead of per node",
    ('s2d_bench.evaluation.xǁEvaluationǁevaluate',
     'todo = [t for t in self.targets if not distributed.agree(self.dir.read_record(node, t) is not None if (distributed.is_main()) or True else None)]'):
        "distributed.agree hands every rank rank 0's value: what another rank read is never used",
    ('s2d_bench.preflight.x__phase',
     'fitting = next((m for m in range(b + 1, 0, -1) if _fits(estimate(m), memory)), None)'):
        "an estimate grows with its batch and the batch b itself is over the device: a search that starts above b finds the same batch",
    ('s2d_bench.preflight.x_memory_report',
     'row["host_gib"] = cache / budget.GIB'):
        "TRL, the one backend that holds rollouts on the host (budget.HOST_ROLLOUTS), offloads nothing: host_gib is 0 before the cache is added",
    ('s2d_bench.preflight.x_memory_report',
     'if node.stage not in largest or row["device_gib"] >= largest[node.stage][0]["device_gib"]:'):
        "two nodes of one stage with the same estimate have the same memory settings: either is the stage's row",
    ('s2d_bench.preflight.x__fixes',
     'return budget.stage_estimate(None, stage.trains, params, shapes, shape, None, stage.needs_teacher, precision,'):
        "the stage's name only labels an estimate's row; update_fits reads its device_gib",
    ('s2d_bench.preflight.x__fixes',
     'if room <= 1:'):
        "under one byte of room either answer says no rollout fits (a token's KV cache is more than a byte); "
        "differences of GiB figures do not land between 0 and 1 byte",
    ('s2d_bench.preflight.x_refuse_what_does_not_fit',
     'parts += [f"{r[\'phase\']} ({r[\'model\']}) needs about {r[\'device_gib\']:.1f} GiB a rank: set {\'XX; XX\'.join(r[\'fixes\'])}" for r in late]'):
        "a phase's row offers one fix (preflight._phase): the separator between fixes is never written",
    ('s2d_bench.preflight.x__config',
     'return MODELS.get(model_cfg.builder)(seed=1)[0].config'):
        "a builder's seed initialises the weights; its config is the same for every seed",
    ('s2d_bench.preflight.x__tokenizer',
     'return MODELS.get(model_cfg.builder)(seed=1)[1]'):
        "a builder's seed initialises the weights; its tokenizer is the same for every seed",
    ('s2d_bench.preflight.x__config',
     'ref = resolve_model(model_cfg.path, f"{role}.path", tokenizer=None)'):
        "resolve_model reads `tokenizer` as a truth value: None is False",
    ('s2d_bench.preflight.x__config',
     'return AutoConfig.from_pretrained(ref, )'):
        "load_kwargs only adds local_files_only offline, which spares the hub's retries: a cached snapshot loads either way "
        "(transformers reads HF_HUB_OFFLINE too)",
    ('s2d_bench.preflight.x__fixes',
     'if row["device_gib"] < memory:'):
        "a stage estimate at exactly the device's memory passes the checks after this one too: its states plus the update, "
        "or plus the rollouts, are at most its total (budget.stage_estimate), so no fix is offered either way",
    ('s2d_bench.preflight.x__fixes',
     'layout)["device_gib"] < memory'):
        "only a device whose memory equals a micro-batch's estimate to the byte tells < from <= (the estimates are byte "
        "counts over 2**30; the device's is a config's GB or CUDA's byte count)",
    ('s2d_bench.preflight.x__served_teacher',
     'require(stage == "warmup" or not getattr(st, "teacher_cache", None),'):
        "GRPO's config has no teacher_cache: the default is read as a truth value, where None is False",
    ('s2d_bench.preflight.x_check_models',
     'damage = damaged_weights(Path(ref)) if (Path(ref).is_dir()) or True else None'):
        "a reference that is not a folder is a hub id (resolve_model refuses files and missing paths): damaged_weights finds "
        "no weight file under it and says nothing",
    ('s2d_bench.preflight.x_check_served_teacher',
     'served = ServedTeacher(cfg.teacher, tok, None, cfg.prompt.thinking)'):
        "check_tokenizer only tokenizes text: the stop ids serve sampling",
    ('s2d_bench.preflight.x_check_served_teacher',
     'served = ServedTeacher(cfg.teacher, tok, stop_ids_of(None, tok), None)'):
        "check_tokenizer only tokenizes text (both prompt modes are probed): the prompt mode serves sampling",
    ('s2d_bench.preflight.x_run',
     'refusals(cfg.backend).pair(None, lambda role: _config(cfg, role).vocab_size)'):
        "the one pair refusal (TRL's, backends/refusals.py) reads the two embedding sizes, not the config",
}


# Test runs that ended without passing in a way mutmut does not call killed: a KeyboardInterrupt the mutant raised escaped
# the test (pytest's exit status 2, "interrupted by user": nobody pressed Ctrl-C during a mutation run), or a signal the
# mutant left unhandled ended the test process (SIGUSR1, SIGINT: resume.py's stop requests).
FAILED_RUNS = {2: "killed", -signal.SIGUSR1: "killed", -signal.SIGINT: "killed"}


def _status(exit_code: int | None) -> str:
    from mutmut.stats import status_by_exit_code

    return FAILED_RUNS.get(exit_code) or status_by_exit_code[exit_code]


@functools.cache
def _functions(path: Path) -> dict[str, str]:
    """Every function's source in a mutmut-written module (mutants of methods sit in their class), by name."""
    text = path.read_text()
    return {node.name: ast.get_source_segment(text, node) or "" for node in ast.walk(ast.parse(text))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}


def _changed(name: str, where: Path = ROOT) -> tuple[str, str] | None:
    """The line(s) mutant `name` changes, as they read before and after (stripped, ' | '-joined); None if it is not there."""
    module, _, function = name.rpartition(".")
    path = where / "mutants" / (module.replace(".", "/") + ".py")
    if not path.is_file():
        return None
    sources = _functions(path)
    orig_name = function.rsplit("__mutmut_", 1)[0] + "__mutmut_orig"
    mutant, original = sources.get(function), sources.get(orig_name)
    if mutant is None or original is None:
        return None
    mutant = mutant.replace(function, orig_name, 1)  # the def line carries the mutant's own name
    diff = list(difflib.ndiff(original.splitlines(), mutant.splitlines()))
    return (" | ".join(x[2:].strip() for x in diff if x.startswith("- ")), " | ".join(x[2:].strip() for x in diff if x.startswith("+ ")))


def mutated_line(name: str, where: Path = ROOT) -> str | None:
    """The line(s) mutant `name` changes, as they read mutated; None if it is not there."""
    changed = _changed(name, where)
    return None if changed is None else changed[1]


# Whole kinds of mutant that cannot change behaviour, by a rule on the changed line (original, mutated) -> why.
NCOLS = re.compile(r",?\s*dynamic_ncols=\w+")
SQL = re.compile(r"""["']\s*(select|insert|delete|alter|drop|pragma|create|update|where|order by)\b""", re.IGNORECASE)
RULES: list[tuple[Callable[[str, str, str], bool], str]] = [
    (lambda function, old, new: old != new and old.lower() == new.lower() and bool(SQL.search(old)),
     "SQLite reads keywords, table and column names in any case"),
    (lambda function, old, new: "ensure_ascii=False" in old and new == old.replace("ensure_ascii=False", "ensure_ascii=None"),
     "json.dumps reads ensure_ascii as a truth value: None is False"),
    (lambda function, old, new: function.startswith("s2d_bench.resume.") and "cuda" in old.lower(),
     "CUDA's random states, saved and restored beside the CPU's: this machine has no CUDA device (the CPU state's path is tested)"),
    (lambda function, old, new: "dynamic_ncols=" in old and NCOLS.sub("", old) == NCOLS.sub("", new),
     "dynamic_ncols only fits a bar to a terminal's changing width: nothing else about the bar or the run changes"),
    (lambda function, old, new: function.endswith("ǁStoreǁ_use_wal") and any(t in old for t in ("time.sleep", "attempts: int", "timeout=")),
     "how long and how often the journal switch retries a locked file: timing, not outcome (test: a held lock is waited for)"),
]


def equivalence(name: str, where: Path = ROOT) -> str | None:
    """Why surviving mutant `name` is equivalent (EQUIVALENT, else a rule of RULES), or None."""
    function = name.rsplit("__mutmut_", 1)[0]
    changed = _changed(name, where)
    listed = EQUIVALENT.get((function, changed[1] if changed else ""))
    if listed is not None or changed is None:
        return listed
    return next((why for rule, why in RULES if rule(function, *changed)), None)


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def groups() -> list[str]:
    return ["core", *_pyproject().get("tool", {}).get("s2d-mutants", {}).get("groups", {})]


def workdir(group: str) -> Path:
    """Where a group's mutmut runs: the repository for core, else a copy of it with the group's [tool.mutmut]."""
    return ROOT if group == "core" else ROOT / ".mutants" / group


def _toml(value) -> str:  # noqa: ANN001 - the str / bool / list[str] values of [tool.mutmut]
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value)


def prepare(group: str, names: list[str]) -> Path:
    """The group's copy of the repository, refreshed (its mutants/ kept, so mutmut reuses results of unchanged code)."""
    where = workdir(group)
    _drop_stale_test_map(where, names)
    if group == "core":
        _refresh_package_data(where)
        return where
    data = _pyproject()["tool"]
    spec = data["s2d-mutants"]["groups"][group]
    settings = {**data["mutmut"], "only_mutate": spec["modules"], "pytest_add_cli_args_test_selection": spec["tests"],
                **({"pytest_add_cli_args": spec["pytest_args"]} if "pytest_args" in spec else {}), **spec.get("mutmut", {})}
    where.mkdir(parents=True, exist_ok=True)
    for name in ("s2d_bench", "tests", "benchmarks", "leaderboards"):
        shutil.rmtree(where / name, ignore_errors=True)
        shutil.copytree(ROOT / name, where / name, ignore=shutil.ignore_patterns("__pycache__", "results"))
    for name in ("README.md", "Makefile", "setup.cfg"):
        shutil.copy2(ROOT / name, where / name)
    (where / "pyproject.toml").write_text("[tool.mutmut]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in settings.items()))
    _refresh_package_data(where)
    return where


def _drop_stale_test_map(where: Path, names: list[str]) -> None:
    """mutmut keeps which tests call each function (mutants/mutmut-stats.json) and, on a later run, adds only the tests it
    has not seen: a function added since, or one that old tests now reach, is mapped to the new tests alone, and its
    mutants pass that the old tests would kill (found on #32's helpers). When any source or test file is newer than the
    map, drop it: the next run measures every test again (a few minutes) before running mutants. The survivors then run
    again (`_rerun_survivors`): all of them on a whole-group run; on a run of named mutants only those named, and the
    others keep their verdicts, marked (mutants/survivors-unchecked) until a whole-group run reruns them."""
    stats = where / "mutants" / "mutmut-stats.json"
    marker = where / "mutants" / "survivors-unchecked"
    if stats.exists():
        sources = [f for folder in ("s2d_bench", "tests") for f in (ROOT / folder).rglob("*.py")]
        if max(f.stat().st_mtime for f in sources) > stats.stat().st_mtime:
            stats.unlink()
            marker.touch()
    if marker.exists():
        _rerun_survivors(where, names)
        if not names:
            marker.unlink()


def _rerun_survivors(where: Path, names: list[str]) -> None:
    """mutmut keeps each mutant's result while its function is unchanged, so a test written to kill a survivor was never
    run against it (found on static_decode's survivors), nor a test that now reaches a function no test reached before
    (found on the engines group's 126, kept as "no tests" after the tests that reach them joined the group): forget the
    results of both (those `names` matches, as mutmut matches them, or all), and they run again."""
    for meta in (where / "mutants").rglob("*.meta"):
        data = json.loads(meta.read_text())
        codes = data.get("exit_code_by_key", {})
        again = [key for key, code in codes.items() if code in (0, 33) and (not names or any(fnmatch.fnmatch(key, n) for n in names))]
        if again:
            for key in again:
                codes[key] = None
            meta.write_text(json.dumps(data))


def _refresh_package_data(where: Path) -> None:
    """mutmut copies the package's other files (shipped configs, templates, task YAMLs) into mutants/ once, when it first
    makes it, and the mutated package reads them from there: copy today's over, or the tests read stale configs."""
    mutated = where / "mutants" / "s2d_bench"
    if not mutated.is_dir():
        return
    for path in (ROOT / "s2d_bench").rglob("*"):
        if path.is_file() and path.suffix != ".py" and "__pycache__" not in path.parts:
            target = mutated / path.relative_to(ROOT / "s2d_bench")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)


def score(group: str = "core") -> dict:
    modules: dict[str, dict] = defaultdict(lambda: {"killed": 0, "survived": 0, "equivalent": 0, "no tests": 0, "timeout": 0, "other": 0,
                                                    "not checked": 0, "survivors": [], "equivalents": []})  # not checked: a run stopped early
    where = workdir(group)
    for meta in sorted((where / "mutants").rglob("*.py.meta")):
        module = str(meta.relative_to(where / "mutants"))[: -len(".meta")]
        for name, code in json.loads(meta.read_text()).get("exit_code_by_key", {}).items():
            status = _status(code)
            row = modules[module]
            if status == "survived" and equivalence(name, where) is not None:
                row["equivalent"] += 1
                row["equivalents"].append(name)
            elif status == "survived":
                row["survived"] += 1
                row["survivors"].append(name)
            elif status in row:
                row[status] += 1
            else:
                row["other"] += 1
    for row in modules.values():
        judged = row["killed"] + row["survived"] + row["no tests"] + row["timeout"] + row["other"]
        row["score"] = round((row["killed"] + row["timeout"]) / judged, 3) if judged else None
    killed = sum(r["killed"] + r["timeout"] for r in modules.values())
    judged = sum(r["killed"] + r["survived"] + r["no tests"] + r["timeout"] + r["other"] for r in modules.values())
    return {"modules": dict(modules), "total": {"killed": killed, "judged": judged, "score": round(killed / judged, 3) if judged else None},
            "equivalent": {f"{f}: {line}": why for (f, line), why in EQUIVALENT.items()}}


# mutmut 3.8.1's fork-server runner (process_isolation = "forkserver") hands a mutant's tests to pytest in a set's order,
# where its fork runner sorts them fastest first. A mutant is killed by its first failing test (-x), so in set order it
# ran, on average, half of its function's tests: the pipeline group's training mutants ran about 60 of their 122 s of
# tests where the fastest covering test takes about a second. mutmut is started with its runner's submit sorting them.
FASTEST_FIRST = """
import sys
from mutmut.__main__ import cli
from mutmut.state import state
from mutmut.workers.isolation import ForkServerRunner
submit = ForkServerRunner.submit
def fastest_first(self, mutant_name, tests, *rest):
    return submit(self, mutant_name, sorted(tests, key=lambda test: state().duration_by_test[test]), *rest)
ForkServerRunner.submit = fastest_first
sys.argv[0] = "mutmut"
cli()
"""


def _run(group: str, max_children: int, names: list[str]) -> int:
    """mutmut over one group (all its mutants, or those named); returns the seconds it took."""
    where = prepare(group, names)
    start = time.perf_counter()
    # A test's subprocesses (the CLI, DeepSpeed's ranks) import the editable install, not the mutated copy, so only
    # in-process tests kill mutants. (PYTHONPATH at the copy would reach them, but then mutmut's stats pass records no
    # test for any function: mutmut 3.8.1.)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "S2D_DATA_DIR": os.environ.get("S2D_DATA_DIR", str(ROOT.parent / "shared" / "data"))}
    subprocess.run([sys.executable, "-c", FASTEST_FIRST, "run", "--max-children", str(max_children), *names], cwd=where, env=env, check=False)
    return round(time.perf_counter() - start)


def _unjudged(row: dict) -> bool:
    """No mutant of the module was run in this copy (a fresh copy, and a rerun of other modules' mutants by name)."""
    return row["killed"] + row["survived"] + row["equivalent"] + row["no tests"] + row["timeout"] + row["other"] == 0


def _report(previous: dict, group: str, fresh: dict, seconds: int | None) -> dict:
    """The results file with `group`'s scores replaced: per group (modules, seconds), and every module's merged."""
    by_group = previous.get("groups", {})
    if not by_group and "modules" in previous:  # a file from before groups: it holds the core group
        by_group = {"core": {"modules": previous["modules"], "seconds": previous.get("seconds")}}
    if seconds is None:  # a rescore keeps the last run's duration
        seconds = by_group.get(group, {}).get("seconds")
    kept = by_group.get(group, {}).get("modules", {})
    by_group[group] = {"modules": {m: kept[m] if m in kept and _unjudged(row) else row for m, row in fresh["modules"].items()},
                       "seconds": seconds}
    modules = {m: row for g in by_group.values() for m, row in g["modules"].items()}
    killed = sum(r["killed"] + r["timeout"] for r in modules.values())
    judged = sum(r["killed"] + r["survived"] + r["no tests"] + r["timeout"] + r["other"] for r in modules.values())
    return {"groups": by_group, "modules": modules,
            "total": {"killed": killed, "judged": judged, "score": round(killed / judged, 3) if judged else None},
            "equivalent": fresh["equivalent"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--group", default="core", help=f"which group: {', '.join(groups())}, or all")
    ap.add_argument("--score-only", action="store_true")
    ap.add_argument("--max-children", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--show", nargs="+", default=[], help="print the line each named mutant changes, and stop")
    ap.add_argument("names", nargs="*", help="rerun only these mutants (mutmut names or globs) of the group")
    args = ap.parse_args()
    chosen = groups() if args.group == "all" else [args.group]
    if args.group not in ("all", *groups()):
        raise SystemExit(f"no mutation group {args.group!r}: {', '.join(groups())}, or all")
    if args.show:
        for name in args.show:
            print(f"{name}\n    {mutated_line(name, workdir(chosen[0]))!r}")
        return
    for group in chosen:
        seconds = None if args.score_only else _run(group, args.max_children, args.names)
        if args.names:  # a partial rerun: its duration is not the group's
            seconds = None
        fresh = score(group)
        report = _report(json.loads(OUT.read_text()) if OUT.exists() else {}, group, fresh, seconds)
        row_seconds = report["groups"][group]["seconds"]
        print(f"group {group}")
        print(f"{'module':<40}{'killed':>8}{'survived':>10}{'equiv':>7}{'no tests':>10}{'score':>7}")
        for module, row in sorted(report["groups"][group]["modules"].items()):  # a rerun by name keeps the others' last scores
            print(f"{module:<40}{row['killed'] + row['timeout']:>8}{row['survived']:>10}{row['equivalent']:>7}{row['no tests']:>10}"
                  f"{row['score'] if row['score'] is not None else '-':>7}")
        print(f"total (every group): {report['total']['killed']} of {report['total']['judged']} killed ({report['total']['score']}); "
              f"group {group}: {row_seconds} s")
        OUT.parent.mkdir(exist_ok=True)
        OUT.write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {OUT}")
    if args.group == "all":
        used = {(n.rsplit("__mutmut_", 1)[0], mutated_line(n, workdir(g)) or "") for g in chosen
                for row in score(g)["modules"].values() for n in row["equivalents"]}
        unused = [key for key in EQUIVALENT if key not in used]
        if unused:
            print(f"{len(unused)} EQUIVALENT entries match no surviving mutant (killed now, or the code changed): {unused}")

if __name__ == "__main__":
    main()
