"""The vLLM stand-in against the real package's API manifest, and our engine against both.

tests/fakes/vllm/api-<version>.json is written by tools/vllm_manifest.py from the pinned vLLM
wheel's source. These tests fail when the stand-in's surface drifts from it, when our engine
passes a keyword the real package does not take, and when the pin in setup.cfg moves without a
new manifest. With S2D_VLLM_SRC pointing at an unpacked wheel, the manifest is made again and
must equal the checked-in one.
"""

import configparser
import inspect
import json
import os
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FAKES = ROOT / "tests" / "fakes"


@pytest.fixture
def vllm(monkeypatch):
    monkeypatch.syspath_prepend(str(FAKES))
    for name in ("vllm", "s2d_bench.generation.vllm"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    import vllm

    vllm.INSTANCES.clear()
    yield vllm
    for llm in vllm.INSTANCES:
        llm.llm_engine.engine_core.shutdown()
    for name in ("vllm", "s2d_bench.generation.vllm"):
        sys.modules.pop(name, None)


def test_the_manifest_is_of_the_pinned_version(vllm):
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    pin = re.search(r"vllm==([\w.]+)", cfg["options.extras_require"]["vllm"]).group(1)
    assert vllm.MANIFEST["version"] == vllm.__version__ == pin, "refresh the manifest: python tools/vllm_manifest.py <unpacked wheel>"


def test_the_stand_ins_methods_and_outputs_have_the_real_signatures(vllm):
    for name, spec in vllm.MANIFEST["methods"].items():
        params = [p.name for p in inspect.signature(getattr(vllm.LLM, name)).parameters.values() if p.name != "self"]
        assert params == spec["params"], name
    assert set(vllm.SamplingParams.FIELDS) == {k for k in vllm.MANIFEST["sampling_params"]["fields"] if not k.startswith("_")}
    fields = vllm.CompletionOutput(index=0, text="", token_ids=(), cumulative_logprob=None, logprobs=None)
    assert set(vars(fields)) == set(vllm.MANIFEST["completion_output"]) >= {"token_ids", "finish_reason", "stop_reason"}
    with pytest.raises(AssertionError):
        vllm.CompletionOutput(index=0, tokens=())
    assert {"engine_core"} <= set(vllm.MANIFEST["engine"]["llm_engine_attrs"])  # the path our shutdown takes
    assert vllm.MANIFEST["engine"]["engine_core_shutdown"]["params"] == ["timeout"]


def test_what_our_engine_passes_is_what_the_real_package_takes(vllm):
    from s2d_bench.config import RolloutConfig
    from s2d_bench.generation.sampling import Sampling
    from s2d_bench.generation.vllm import engine_args, sampling_params
    from s2d_bench.models.builders import tiny_qwen3_student

    model, _ = tiny_qwen3_student(seed=0)
    known = set(vllm.MANIFEST["llm_init"]["params"]) | set(vllm.MANIFEST["engine_args"])
    assert set(engine_args(model, RolloutConfig(), "/tmp/x")) <= known
    for s in (Sampling(k=4), Sampling(k=4, temperature=0.0), Sampling(k=1, top_k=20, top_p=0.9)):
        sampling_params(s, 3, stop_token_ids=[1, 2], detokenize=False)  # the stand-in refuses unknown fields and bad values
    with pytest.raises(TypeError, match="Unexpected"):
        vllm.SamplingParams(max_new_tokens=4)
    with pytest.raises(TypeError, match="unexpected keyword"):
        vllm.LLM(model="/tmp/x", max_new_tokens=4)


@pytest.mark.parametrize("kwargs, message", [
    ({"n": 2, "temperature": 0.0}, "n must be 1 when using greedy sampling"),
    ({"temperature": 2.5}, r"temperature must be in \[0, 2\], got 2.5"),
    ({"top_p": 0.0}, r"top_p must be in \(0, 1\]"),
    ({"top_k": -2}, "top_k must be 0"),
    ({"max_tokens": 0}, "max_tokens must be at least 1"),
])
def test_the_stand_in_refuses_what_the_real_sampling_params_refuse(vllm, kwargs, message):
    with pytest.raises(ValueError, match=message):
        vllm.SamplingParams(**kwargs)
    greedy = vllm.SamplingParams(temperature=0.0, top_k=5, top_p=0.5)
    assert (greedy.top_k, greedy.top_p) == (0, 1.0)  # greedy resets them, as __post_init__ does


def test_our_temperature_limit_is_the_real_one(vllm):
    from s2d_bench.config import MAX_TEMPERATURE

    vllm.SamplingParams(temperature=MAX_TEMPERATURE)
    with pytest.raises(ValueError):
        vllm.SamplingParams(temperature=MAX_TEMPERATURE + 1e-9)


def test_no_two_prompts_samples_or_ranks_share_a_noise_stream(vllm):
    """vLLM seeds sample j of a request seeded s with s + j (the manifest's child_seed). One SamplingParams per
    prompt, seeded from the step seed by `prompt_seeds`, keeps every stream of a step apart: over 4 ranks' shares
    of 64 prompts x 16 samples, every stream is different, and a rank's streams do not depend on the others'."""
    from s2d_bench.backends.batching import shard
    from s2d_bench.generation.protocol import prompt_seeds
    from s2d_bench.generation.sampling import Sampling
    from s2d_bench.generation.vllm import sampling_params

    seeds = prompt_seeds(12345, 64)
    streams = []
    for rank in range(4):
        for seed in shard(seeds, rank, 4):
            streams.extend(sampling_params(Sampling(k=16), seed).child_seeds())
    assert len(streams) == 64 * 16 == len(set(streams))
    assert vllm.SamplingParams(n=3, seed=10).child_seeds() == [10, 11, 12]  # the rule itself, as read from the source
    shared = vllm.SamplingParams(n=3, seed=11).child_seeds()  # what one seed per batch (s, s + 1, ...) would do
    assert set(shared) & {10, 11, 12}


def test_the_stand_ins_loader_reports_fused_names_as_the_real_qwen3_loader(vllm):
    from s2d_bench.models.builders import tiny_qwen3_student

    model, _ = tiny_qwen3_student(seed=0)
    model.config.architectures = ["Qwen3ForCausalLM"]
    target = vllm._Model(model)
    names = {n for n, _ in target.named_parameters()}
    assert "model.layers.0.self_attn.qkv_proj.weight" in names and "model.layers.0.mlp.gate_up_proj.weight" in names
    assert not any(".q_proj." in n or ".up_proj." in n for n in names)
    loaded = target.load_weights([("model.layers.0.self_attn.k_proj.weight", model.model.layers[0].self_attn.k_proj.weight.data)])
    assert loaded == {"model.layers.0.self_attn.qkv_proj.weight"}  # one shard reports the fused layer
    assert target.packed_modules_mapping == {"qkv_proj": ["q_proj", "k_proj", "v_proj"], "gate_up_proj": ["gate_proj", "up_proj"]}


def test_an_engine_start_refuses_without_the_free_memory_its_share_needs(vllm, monkeypatch, tmp_path):
    from s2d_bench.models.builders import save, tiny_qwen3_student

    save(*tiny_qwen3_student(seed=0), tmp_path)
    monkeypatch.setattr(vllm, "DEVICE_MEMORY", (4 * 2**30, 10 * 2**30))
    with pytest.raises(ValueError, match="less than desired GPU memory utilization"):
        vllm.LLM(model=str(tmp_path), gpu_memory_utilization=0.5)
    assert vllm.MANIFEST["startup"]["refused_when"] == "init_snapshot.free_memory < requested_memory"
    assert {"random.seed", "np.random.seed", "torch.manual_seed"} <= set(vllm.MANIFEST["startup"]["reseeds"])


@pytest.mark.skipif(not os.environ.get("S2D_VLLM_SRC"), reason="set S2D_VLLM_SRC to an unpacked vLLM wheel to remake the manifest")
def test_the_manifest_is_what_the_tool_reads_from_the_real_package(tmp_path):
    import subprocess

    out = tmp_path / "api.json"
    subprocess.run([sys.executable, str(ROOT / "tools" / "vllm_manifest.py"), os.environ["S2D_VLLM_SRC"], "--out", str(out)], check=True)
    fresh = json.loads(out.read_text())
    shipped = json.loads((FAKES / "vllm" / f"api-{fresh['version']}.json").read_text())
    assert fresh == shipped


def test_greedy_evaluation_asks_one_sample_and_repeats_it(vllm, tmp_path):
    from s2d_bench.generation.engine import EngineConfig
    from s2d_bench.generation.sampling import Sampling
    from s2d_bench.generation.vllm import VLLMEngine
    from s2d_bench.models.builders import save, tiny_qwen3_student

    save(*tiny_qwen3_student(seed=2), tmp_path)
    engine = VLLMEngine.load(str(tmp_path), EngineConfig(device="cpu"))
    out = engine.generate(["1+1=", "2+2="], Sampling(k=4, temperature=0.0, max_new_tokens=5), [1, 2])
    engine.close()
    assert [p.n for p in vllm.INSTANCES[0].params_at_generate[0]] == [1, 1]
    assert len(out) == 8 and all(out[i].ids == out[i - i % 4].ids for i in range(8))
