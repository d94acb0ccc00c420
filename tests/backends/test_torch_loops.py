"""What the plain-PyTorch loops (torch_backend.py) do around each step, watched from outside on tiny models: which model
samples (and whether it moves between rollouts), with which settings, which prompts and seeds a rank draws, whose
weights it gathers, where the reference model comes in, the phases the memory meter sees, what goes to the optimizer
per micro-batch, what is logged and what the progress bar shows. The numbers of a step are tested in test_grpo_step,
test_memory_settings and test_parity; the stages end to end in test_contract."""

import contextlib
import re

import pytest
from test_contract import _inputs

from s2d_bench.backends import torch_backend
from s2d_bench.backends.runtime import AdamWTrainer, LocalRuntime
from s2d_bench.backends.torch_backend import TorchBackend
from s2d_bench.generation.sampling import Sampling
from s2d_bench.harness.rewards import Scores
from s2d_bench.stages import STAGES


class _SecondOfTwo(LocalRuntime):
    """Rank 1 of a launch of 2 whose peer holds the same numbers (so every mean is this rank's); records whose full
    weights it was asked to gather."""

    rank, world = 1, 2

    def __init__(self) -> None:
        self.gathered: list = []

    @contextlib.contextmanager
    def full_weights(self, model):
        self.gathered.append(model)
        yield


@pytest.fixture
def watch(monkeypatch):
    """Every engine a stage opens (its model, `trained`, each rollouts call), every phase, every backward's `last`."""
    seen = {"engines": [], "phases": [], "last": [], "updates": [], "advantages": [], "checkpointing": []}
    real_engine = TorchBackend._engine

    def engine(self, model, tok, trained):
        @contextlib.contextmanager
        def opened():
            with real_engine(self, model, tok, trained) as live:
                calls = []
                rollouts = live.rollouts

                def spy(prompts, sampling, seeds):
                    calls.append((list(prompts), sampling, list(seeds)))
                    return rollouts(prompts, sampling, seeds)

                live.rollouts = spy
                seen["engines"].append((model, trained, calls))
                yield live
        return opened()

    @contextlib.contextmanager
    def phase(name):
        seen["phases"].append(name)
        yield

    backward = AdamWTrainer.backward

    def recorded(self, loss, last=True):
        seen["last"].append(last)
        seen["checkpointing"].append(self.model.is_gradient_checkpointing)
        return backward(self, loss, last)

    updates = torch_backend.policy_updates

    def policy_updates(trainer, ref, batch, advantages, *args):
        seen["updates"].append(ref)
        seen["advantages"].append(advantages.clone())
        return updates(trainer, ref, batch, advantages, *args)

    monkeypatch.setattr(TorchBackend, "_engine", engine)
    monkeypatch.setattr(torch_backend, "phase", phase)
    monkeypatch.setattr(AdamWTrainer, "backward", recorded)
    monkeypatch.setattr(torch_backend, "policy_updates", policy_updates)
    return seen


def _run(stage, overrides, runtime=None, reward=None):
    x = _inputs("torch", stage, overrides)
    if runtime is not None:
        x.backend.runtime = runtime
    if reward is not None:
        x.reward = reward
    STAGES.get(stage).run(x)
    return x


def _bar(err: str, name: str) -> str:
    """The progress bar's last state: its final line, as tqdm redraws it with carriage returns."""
    return [line for line in re.split(r"[\r\n]", err) if line.startswith(f"{name}:")][-1]


def test_grpo_samples_the_moving_policy_with_its_settings_and_pays_the_kl_to_a_reference(watch, capsys):
    rl = ["stages.teacher_rl.temperature=0.7", "stages.teacher_rl.max_new_tokens=5", "stages.teacher_rl.kl_coef=0.1",
          "stages.teacher_rl.micro_batch_size=16"]
    x = _run("teacher_rl", rl, reward=lambda texts, problems: Scores([float(len(t) % 2 == 0) for t in texts], timeouts=3))
    ((model, trained, calls),) = watch["engines"]
    assert model is x.model and trained is True  # the policy moves between rollouts (vLLM pushes its weights each time)
    assert [sampling for _, sampling, _ in calls] == [Sampling(k=x.cfg.samples_per_prompt, temperature=0.7, max_new_tokens=5)] * 2
    assert watch["phases"] == ["reference", "rollout", "update", "rollout", "update"]
    assert len(watch["updates"]) == 2 and all(ref is not None and ref is not x.model for ref in watch["updates"])
    assert all(row["kl_ref"] >= 0 for row in x.logged) and x.logged[1]["kl_ref"] > 0  # the policy left its anchor
    assert [row["grading_timeouts"] for row in x.logged] == [3, 3]
    assert watch["last"] == [False, True] * 2  # 4 prompts x 8 samples in micro-batches of 16: the last pass of each step says so
    assert all(row["entropy"] > 0 and row["grad_norm"] > 0 and 1 <= row["response_length"] <= 5 for row in x.logged)
    bar = _bar(capsys.readouterr().err, "teacher_rl")
    assert bar.startswith("teacher_rl: 100%") and " 2/2 " in bar and "step/s" in bar and f"reward={x.logged[-1]['reward']:.3f}" in bar

    watch["phases"].clear(), watch["updates"].clear()
    _run("teacher_rl", ["stages.teacher_rl.kl_coef=0"])
    assert watch["phases"] == ["rollout", "update"] * 2 and watch["updates"] == [None, None]  # no anchor, no copy of it


def test_a_rank_samples_every_world_th_prompt_of_the_step_with_its_seed_and_counts_every_ranks_timeouts(watch):
    reward = lambda texts, problems: Scores([1.0] * len(texts), timeouts=3)  # noqa: E731
    _run("student_rl", [], reward=reward)
    whole = watch["engines"][-1][2]
    rank = _SecondOfTwo()
    x = _run("student_rl", [], runtime=rank, reward=reward)
    share = watch["engines"][-1][2]
    assert [(prompts, seeds) for prompts, _, seeds in share] == [(prompts[1::2], seeds[1::2]) for prompts, _, seeds in whole]
    assert rank.gathered == [x.model, x.model]  # the sampling model's weights gathered for each rollout (ZeRO-3)
    assert [row["grading_timeouts"] for row in x.logged] == [6, 6]  # 3 on each of the 2 ranks


@pytest.mark.parametrize("stage, sampler, trained", [("warmup", "teacher", False), ("opd", "model", True)])
def test_distillation_samples_from_the_right_model_and_splits_and_logs_the_step(watch, capsys, stage, sampler, trained):
    settings = [f"stages.{stage}.temperature=0.7", f"stages.{stage}.max_new_tokens=4", f"stages.{stage}.micro_batch_size=2"]
    _run(stage, settings)
    whole = watch["engines"][-1][2]
    for key in ("engines", "phases", "last"):
        watch[key].clear()
    capsys.readouterr()
    rank = _SecondOfTwo()
    x = _run(stage, settings, runtime=rank)
    ((model, opened_trained, calls),) = watch["engines"]
    assert model is getattr(x, sampler) and opened_trained is trained and rank.gathered == [model, model]
    assert [(prompts, seeds) for prompts, _, seeds in calls] == [(prompts[1::2], seeds[1::2]) for prompts, _, seeds in whole]
    assert all(len(prompts) == 4 for prompts, _, _ in calls)  # this rank's half of the step's 8 prompts
    assert [sampling for _, sampling, _ in calls] == [Sampling(k=1, temperature=0.7, max_new_tokens=4)] * 2
    assert watch["phases"] == ["rollout", "update"] * 2
    assert watch["last"] == [False, True] * 2  # 4 sequences in micro-batches of 2: the last pass of each step says so
    objective = "kl_forward" if stage == "warmup" else "kl_reverse"
    for row in x.logged:  # the loss is the stage's own divergence (full estimator), and the step reports its gradient
        assert row["loss"] == pytest.approx(row[objective], rel=1e-4) and row["grad_norm"] > 0
    assert f"{stage}:" not in capsys.readouterr().err  # one bar per launch: rank 0's
    x = _run(stage, [])
    bar = _bar(capsys.readouterr().err, stage)
    assert bar.startswith(f"{stage}: 100%") and f"kl={x.logged[-1]['kl_reverse']:.3f}" in bar


def test_the_backend_loads_a_saved_model_onto_its_device(tmp_path):
    import torch

    from s2d_bench.config import load_config
    from s2d_bench.models.builders import save, tiny_qwen3_student

    model, tok = tiny_qwen3_student(seed=3)
    save(model, tok, tmp_path / "m")
    loaded, loaded_tok = TorchBackend(load_config(None, ["device=cpu"])).load(str(tmp_path / "m"), trained=True)
    ids = torch.tensor([[5, 6, 7]])
    assert loaded.device.type == "cpu" and loaded_tok.pad_token_id == tok.pad_token_id
    torch.testing.assert_close(loaded(input_ids=ids).logits, model.eval()(input_ids=ids).logits)


@pytest.mark.parametrize("scale", [True, False], ids=["grpo", "dr-grpo"])
def test_each_group_of_k_samples_gets_its_own_advantages_scaled_as_configured(watch, scale):
    import torch

    from s2d_bench.losses import grpo_advantages

    first = lambda texts, problems: Scores([float(i % 4 == 0) for i in range(len(texts))])  # noqa: E731 - one hit per group of 4
    _run("teacher_rl", ["stages.teacher_rl.samples_per_prompt=4", f"stages.teacher_rl.scale_rewards={str(scale).lower()}"], reward=first)
    rewards = torch.tensor([[1.0, 0.0, 0.0, 0.0]] * 4)
    for advantages in watch["advantages"]:
        torch.testing.assert_close(advantages, grpo_advantages(rewards, scale).flatten())
    assert watch["advantages"][0][0] == pytest.approx(0.75 / (0.5 + 1e-4) if scale else 0.75)


@pytest.mark.parametrize("stage", ["teacher_rl", "opd"])
def test_gradient_checkpointing_is_on_for_every_backward_pass_of_the_update_and_off_after(watch, stage):
    x = _run(stage, [f"stages.{stage}.gradient_checkpointing=true", f"stages.{stage}.micro_batch_size=2"])
    assert len(watch["checkpointing"]) >= 4 and all(watch["checkpointing"]) and not x.model.is_gradient_checkpointing
    watch["checkpointing"].clear()
    _run(stage, [])
    assert watch["checkpointing"] and not any(watch["checkpointing"])


def test_mini_batches_take_ratios_against_the_rollout_policy_once_the_first_has_moved_it():
    x = _run("teacher_rl", ["stages.teacher_rl.mini_batches=2", "stages.teacher_rl.lr=0.05", "stages.teacher_rl.samples_per_prompt=4"],
             reward=lambda texts, problems: Scores([float(i % 4 == 0) for i in range(len(texts))]))
    assert all(row["clip_frac"] > 0 for row in x.logged)  # the second mini-batch's policy is no longer the rollout policy


@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_a_distillation_step_minimises_the_kl_of_the_distributions_at_the_stages_temperature(direction):
    """The step's loss, from chunked hidden states, is the token-mean KL of softmax(logits / T) computed whole."""
    import torch

    from s2d_bench import chunked
    from s2d_bench.config import DistillConfig
    from s2d_bench.losses import forward_kl, reverse_kl
    from s2d_bench.models.builders import tiny_qwen3_student
    from s2d_bench.models.sequences import completion_logits, join_texts

    student, tok = tiny_qwen3_student(seed=0)
    teacher, _ = tiny_qwen3_student(seed=1)
    batch = join_texts(tok, ["1+2=", "30+4=", "5+60="], ["3", "34 is it", "65"])
    cfg = DistillConfig(temperature=0.7, chunk_size=2, micro_batch_size=2)
    with torch.no_grad():
        s_logits, t_logits = completion_logits(student, batch) / 0.7, completion_logits(teacher, batch) / 0.7
    expected = (forward_kl if direction == "forward" else reverse_kl)(s_logits, t_logits, batch.completion_mask)
    metrics = torch_backend.distill_update(AdamWTrainer(student, 1e-3, 1.0), teacher.eval(), batch, chunked.Objective(direction, "full", 0),
                                           cfg, LocalRuntime())
    assert metrics["loss"] == pytest.approx(float(expected), rel=1e-4) and metrics["grad_norm"] > 0


def test_opd_with_the_topk_estimator_keeps_the_configured_k():
    full = _run("opd", [])
    topk = _run("opd", ["stages.opd.estimator=topk", "stages.opd.top_k=3"])
    assert all(0 < row["loss"] for row in topk.logged) and topk.logged[0]["loss"] != full.logged[0]["loss"]


def test_metrics_are_means_over_every_ranks_items_and_a_step_without_items_logs_zeros():
    assert torch_backend.global_means(LocalRuntime(), {"loss": 3.0, "kl": 1.0}, 2.0) == {"loss": 1.5, "kl": 0.5}
    assert torch_backend.global_means(LocalRuntime(), {"loss": 0.0}, 0.0) == {"loss": 0.0}  # no token anywhere: 0, not NaN
