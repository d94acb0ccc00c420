"""The vLLM API that s2d-bench relies on, read from an unpacked vLLM wheel's source.

vLLM needs a CUDA build and cannot be installed where the suite runs, so the stand-in in
`tests/fakes/vllm` is built from this manifest, and `tests/generation/test_vllm_manifest.py` fails
when the stand-in drifts from it. Nothing is imported from the wheel: its files are parsed (ast),
so any machine can refresh the manifest for another version:

    pip download --no-deps -d /tmp/vllm vllm==0.31.0
    unzip -q /tmp/vllm/vllm-0.31.0-*.whl 'vllm/*' -d /tmp/vllm/src
    python tools/vllm_manifest.py /tmp/vllm/src          # writes tests/fakes/vllm/api-<version>.json

then pin the same version in setup.cfg (the test checks they agree) and run the suite. What it
records: `LLM.__init__`'s keyword arguments and the `EngineArgs` fields its **kwargs reach; the
signatures of the `LLM` methods we call; `SamplingParams`' fields with their defaults and the
validation rules of `_verify_args` and greedy sampling, as Python conditions over `self`; the
seed each of a request's n samples gets (`parallel_sampling.py`); the output classes' fields; the
checkpoint-to-vLLM parameter renames (fused qkv_proj and gate_up_proj) of the Qwen3, Qwen2 and
Llama loaders; the engine start's reseeding, gc.freeze and free-memory check; and, for a teacher served over
HTTP (`s2d_bench.served`, `s2d-bench serve`), the OpenAI-compatible server's routes, the fields and defaults of
its completion, tokenize, model-list and error messages, `Logprob`'s fields, and the model config's
`max_logprobs` and `logprobs_mode` (with what it says prompt log-probabilities are computed from).
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fakes" / "vllm"
METHODS = ("generate", "chat", "sleep", "wake_up", "reset_prefix_cache", "collective_rpc")
LOADERS = {"Qwen3ForCausalLM": ("models/qwen3.py", "models/qwen2.py", "Qwen2Model"),
           "Qwen2ForCausalLM": ("models/qwen2.py", "models/qwen2.py", "Qwen2Model"),
           "LlamaForCausalLM": ("models/llama.py", "models/llama.py", "LlamaModel")}


class ManifestError(RuntimeError):
    """The wheel's source no longer has a shape this reader knows: read the named file and update it."""


def _tree(src: Path, rel: str) -> ast.Module:
    path = src / "vllm" / rel
    if not path.is_file():
        raise ManifestError(f"{path} is missing: is {src} an unpacked vLLM wheel (a folder holding vllm/)?")
    return ast.parse(path.read_text(), filename=str(path))


def _class(tree: ast.Module, name: str, rel: str) -> ast.ClassDef:
    found = [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == name]
    if not found:
        raise ManifestError(f"vllm/{rel} defines no class {name}")
    return found[0]


def _method(cls: ast.ClassDef, name: str) -> ast.FunctionDef:
    found = [n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == name]
    if not found:
        raise ManifestError(f"{cls.name} has no method {name}")
    return found[0]


def _params(fn: ast.FunctionDef) -> dict:
    """Parameter names (positional, then keyword-only) and whether **kwargs is taken."""
    a = fn.args
    names = [p.arg for p in a.posonlyargs + a.args + a.kwonlyargs if p.arg != "self"]
    return {"params": names, "var_kwargs": a.kwarg is not None}


def _fields(cls: ast.ClassDef) -> dict[str, object]:
    """Annotated class-level fields and their defaults (a literal's value; None when it is an expression or absent)."""
    out: dict[str, object] = {}
    for node in cls.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            default = None
            if node.value is not None:
                try:
                    default = ast.literal_eval(node.value)
                except ValueError:
                    default = None
            out[node.target.id] = default
    return out


def _constants(tree: ast.Module) -> dict[str, float]:
    """Module-level numeric constants (`_SAMPLING_EPS = 1e-5`), which the rules refer to."""
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                continue
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out[node.targets[0].id] = value
    return out


SAFE_CALLS = {"isinstance", "all", "any", "math.isfinite", "len"}


def _checkable(test: ast.expr, fields: set[str], constants: set[str]) -> bool:
    """A condition over `self.<field>`, constants, comparisons and a few pure calls: one the stand-in can evaluate."""
    for node in ast.walk(test):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
            if node.attr not in fields:
                return False
        elif isinstance(node, ast.Call) and ast.unparse(node.func) not in SAFE_CALLS:
            return False
        elif isinstance(node, ast.Name) and node.id not in {"self", "math", "int", "float", "str", "isinstance", "all", "any", "len",
                                                              "st_id", "stop_str", "bad_word", *constants}:
            return False
    return True


def _raises(body: list[ast.stmt]) -> ast.Raise | None:
    return next((s for s in body if isinstance(s, ast.Raise)), None)


def _message(node: ast.Raise) -> str:
    """The raise's first argument as source: an f-string over `self` the stand-in formats the same way."""
    call = node.exc
    if not (isinstance(call, ast.Call) and call.args):
        raise ManifestError(f"a validation raise without a message: {ast.unparse(node)}")
    return ast.unparse(call.args[0])


def _rules(cls: ast.ClassDef, fields: set[str], constants: set[str]) -> list[dict]:
    """`if <condition>: raise X(<message>)` of _verify_args, and greedy sampling's rule with its guard."""
    rules = []
    for node in ast.walk(_method(cls, "_verify_args")):
        if isinstance(node, ast.If) and (raise_ := _raises(node.body)) is not None and _checkable(node.test, fields, constants):
            rules.append({"when": None, "condition": ast.unparse(node.test), "message": _message(raise_)})
    greedy = _method(cls, "_verify_greedy_sampling")
    guard = next((n for n in ast.walk(_method(cls, "__post_init__")) if isinstance(n, ast.If)
                  and any("_verify_greedy_sampling" in ast.unparse(s) for s in n.body)), None)
    if guard is None:
        raise ManifestError("SamplingParams.__post_init__ no longer guards _verify_greedy_sampling with an if")
    for node in ast.walk(greedy):
        if isinstance(node, ast.If) and (raise_ := _raises(node.body)) is not None:
            rules.append({"when": ast.unparse(guard.test), "condition": ast.unparse(node.test), "message": _message(raise_)})
    if not rules:
        raise ManifestError("SamplingParams._verify_args has no rule this reader can check")
    return rules


def _child_seed(src: Path) -> str:
    """How sample `index` of a request with seed `seed` is seeded (v1/engine/parallel_sampling.py)."""
    for node in ast.walk(_tree(src, "v1/engine/parallel_sampling.py")):
        if isinstance(node, ast.Assign) and any(ast.unparse(t).endswith(".seed") for t in node.targets):
            return ast.unparse(node.value)
    raise ManifestError("v1/engine/parallel_sampling.py no longer assigns a child's seed")


def _renames(src: Path, cls_file: str, mapper_file: str, model: str) -> dict:
    """The loader's checkpoint -> vLLM renames of stacked (fused) parameters, and its packed modules."""
    mapper_tree = _tree(src, f"model_executor/{mapper_file}")
    mapper = _class(mapper_tree, model, mapper_file)
    stacked = None
    for node in mapper.body:
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "hf_to_vllm_mapper":
            for kw in getattr(node.value, "keywords", []):
                if kw.arg == "orig_to_new_stacked":
                    stacked = {k: list(v) for k, v in ast.literal_eval(kw.value).items()}
    if stacked is None:
        raise ManifestError(f"{model}.hf_to_vllm_mapper has no orig_to_new_stacked in vllm/model_executor/{mapper_file}")
    tree = _tree(src, f"model_executor/{cls_file}")
    packed = None
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "packed_modules_mapping":
            packed = ast.literal_eval(node.value)
            break
    return {"stacked": stacked, "packed_modules": packed}


def _startup(src: Path) -> dict:
    """What an engine start does to the process: reseeds the global generators, freezes the collector, and
    refuses to start unless free memory covers utilisation x total."""
    seed_fn = next(n for n in ast.walk(_tree(src, "utils/torch_utils.py")) if isinstance(n, ast.FunctionDef) and n.name == "set_random_seed")
    reseeds = sorted({ast.unparse(n.func) for n in ast.walk(seed_fn) if isinstance(n, ast.Call) and "seed" in ast.unparse(n.func)})
    utils = (src / "vllm" / "v1" / "worker" / "utils.py").read_text()
    check = re.search(r"requested_memory = math\.ceil\(\s*(.*?)\s*\)\s*\n\s*if (.*?):", utils, re.S)
    if check is None:
        raise ManifestError("vllm/v1/worker/utils.py: the startup free-memory check has another shape")
    freeze = "gc.freeze()" in (src / "vllm" / "v1" / "engine" / "core.py").read_text()
    return {"reseeds": reseeds, "gc_freeze": freeze, "requested_memory": " ".join(check.group(1).split()),
            "refused_when": " ".join(check.group(2).split())}


def _engine(src: Path) -> dict:
    """What `LLM.llm_engine` holds (attributes its __init__ sets) and the engine-core client's shutdown signature."""
    engine = _class(_tree(src, "v1/engine/llm_engine.py"), "LLMEngine", "v1/engine/llm_engine.py")
    attrs = sorted({t.attr for n in ast.walk(_method(engine, "__init__")) if isinstance(n, (ast.Assign, ast.AnnAssign))
                    for t in (n.targets if isinstance(n, ast.Assign) else [n.target])
                    if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self"})
    client = _class(_tree(src, "v1/engine/core_client.py"), "InprocClient", "v1/engine/core_client.py")
    return {"llm_engine_attrs": attrs, "engine_core_shutdown": _params(_method(client, "shutdown"))}


SERVED = {  # the server's messages s2d_bench.served speaks, by the file that defines them
    "entrypoints/openai/completion/protocol.py": ("CompletionRequest", "CompletionLogProbs", "CompletionResponseChoice", "CompletionResponse"),
    "entrypoints/serve/tokenize/protocol.py": ("TokenizeCompletionRequest", "TokenizeResponse", "DetokenizeRequest", "DetokenizeResponse"),
    "entrypoints/serve/engine/protocol.py": ("ModelCard", "ModelList", "ErrorInfo", "ErrorResponse"),
    "logprobs.py": ("Logprob",),
}
ROUTERS = ("entrypoints/openai/completion/api_router.py", "entrypoints/serve/tokenize/api_router.py",
           "entrypoints/openai/models/api_router.py", "entrypoints/serve/instrumentator/health.py")


def _default(value: ast.expr | None) -> object:
    """A field's default: a literal, or the first argument or `default=` of a pydantic `Field(...)` (None otherwise)."""
    if isinstance(value, ast.Call) and ast.unparse(value.func) == "Field":
        given = [k.value for k in value.keywords if k.arg == "default"] or value.args[:1]
        value = given[0] if given else None
    try:
        return ast.literal_eval(value) if value is not None else None
    except ValueError:
        return None


def _message_fields(cls: ast.ClassDef) -> dict[str, dict]:
    """A pydantic message's fields: default (as `_default` reads it) and annotation, in declaration order."""
    return {n.target.id: {"default": _default(n.value), "type": ast.unparse(n.annotation)}
            for n in cls.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}


def _served(src: Path) -> dict:
    """What a client of `vllm serve` and a server that stands in for it must agree on."""
    messages = {name: _message_fields(_class(_tree(src, rel), name, rel)) for rel, names in SERVED.items() for name in names}
    routes = []
    for rel in ROUTERS:
        for node in ast.walk(_tree(src, rel)):
            if isinstance(node, ast.Call) and ast.unparse(node.func) in ("router.post", "router.get") and node.args:
                path = ast.literal_eval(node.args[0])
                routes.append(f"{ast.unparse(node.func).split('.')[1].upper()} {path}")
    model = _class(_tree(src, "config/model.py"), "ModelConfig", "config/model.py")
    config = {}
    for i, node in enumerate(model.body):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id in ("max_logprobs", "logprobs_mode"):
            doc = model.body[i + 1]
            text = doc.value.value if isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant) else ""
            config[node.target.id] = {"default": _default(node.value), "doc": " ".join(text.split())}
    if "prompt_logprobs, processed_* and raw_* yield identical" not in config.get("logprobs_mode", {}).get("doc", ""):
        raise ManifestError("ModelConfig.logprobs_mode no longer says prompt log-probs ignore the sampling processors: read "
                            "config/model.py and how the model runner computes prompt logprobs, then update s2d_bench/served")
    return {"messages": messages, "routes": sorted(set(routes)), "model_config": config}


def _sources(src: Path) -> dict[str, str]:
    """sha256 of every file read, so a refresh shows which of them changed."""
    import hashlib

    files = ["_version.py", "entrypoints/llm.py", "engine/arg_utils.py", "sampling_params.py", "outputs.py",
             "v1/engine/parallel_sampling.py", "v1/engine/llm_engine.py", "v1/engine/core_client.py", "v1/engine/core.py",
             "v1/worker/utils.py", "utils/torch_utils.py", *SERVED, *ROUTERS, "config/model.py", *sorted({f"model_executor/{f}" for files in LOADERS.values() for f in files[:2]})]
    return {f: hashlib.sha256((src / "vllm" / f).read_bytes()).hexdigest() for f in files}


def manifest(src: Path) -> dict:
    version = re.search(r"__version__ = version = '([^']+)'", (src / "vllm" / "_version.py").read_text())
    llm_tree = _tree(src, "entrypoints/llm.py")
    llm = _class(llm_tree, "LLM", "entrypoints/llm.py")
    sp_tree = _tree(src, "sampling_params.py")
    sp = _class(sp_tree, "SamplingParams", "sampling_params.py")
    fields = _fields(sp)
    constants = _constants(sp_tree)
    outputs = _tree(src, "outputs.py")
    return {
        "version": version.group(1) if version else None,
        "llm_init": _params(_method(llm, "__init__")),
        "engine_args": sorted(_fields(_class(_tree(src, "engine/arg_utils.py"), "EngineArgs", "engine/arg_utils.py"))),
        "methods": {name: _params(_method(llm, name)) for name in METHODS},
        "sampling_params": {"fields": fields, "constants": constants, "rules": _rules(sp, set(fields), set(constants)),
                            "child_seed": _child_seed(src)},
        "completion_output": list(_fields(_class(outputs, "CompletionOutput", "outputs.py"))),
        "request_output": _params(_method(_class(outputs, "RequestOutput", "outputs.py"), "__init__"))["params"],
        "loaders": {arch: _renames(src, *files) for arch, files in LOADERS.items()},
        "startup": _startup(src),
        "engine": _engine(src),
        "served": _served(src),
        "sources": _sources(src),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", type=Path, help="folder holding an unpacked wheel's vllm/ package")
    ap.add_argument("--out", type=Path, default=None, help="default: tests/fakes/vllm/api-<version>.json")
    args = ap.parse_args()
    try:
        data = manifest(args.src)
    except ManifestError as exc:
        sys.exit(f"vllm_manifest: {exc}")
    out = args.out or OUT / f"api-{data['version']}.json"
    out.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    print(f"wrote {out}: {len(data['llm_init']['params'])} LLM arguments, {len(data['engine_args'])} EngineArgs fields, "
          f"{len(data['sampling_params']['fields'])} SamplingParams fields, {len(data['sampling_params']['rules'])} rules")


if __name__ == "__main__":
    main()
