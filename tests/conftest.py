import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

FILE_SECONDS = os.path.join(os.path.dirname(__file__), "file_seconds.json")  # tests/file_seconds.py writes it


def pytest_collection_modifyitems(config, items):  # noqa: ANN001, ANN201
    """Longest test files first (their recorded seconds, tests/file_seconds.json): the Makefile's two workers take files
    in this order (`--dist loadfile --no-loadscope-reorder`), so the longest file never starts last and runs alone at
    the end. A file not recorded yet counts as long, so it starts early. The order within a file is kept. Only under
    xdist: a run in one process keeps the order it was given (mutation testing hands pytest its tests fastest first)."""
    if not hasattr(config, "workerinput"):
        return
    import json
    from pathlib import Path

    seconds = json.loads(Path(FILE_SECONDS).read_text()) if os.path.exists(FILE_SECONDS) else {}
    items.sort(key=lambda item: -seconds.get(item.nodeid.split("::")[0], 60.0))


def _shared_data():  # noqa: ANN202 - a Path
    """The real evaluation data: $S2D_DATA_DIR, else the first `shared/data` above the tests (beside the checkout, or
    beside the repository a mutation-testing copy under .mutants/ was made from)."""
    from pathlib import Path

    if os.environ.get("S2D_DATA_DIR"):
        return Path(os.environ["S2D_DATA_DIR"])
    here = Path(__file__).resolve().parent
    return next((p / "shared" / "data" for p in here.parents if (p / "shared" / "data").is_dir()), here.parents[1] / "shared" / "data")


SHARED_DATA = _shared_data()

# Budgets small enough for seconds per run; shapes as in the shipped tiny config.
TINY_OVERRIDES = [
    "teacher.pretrain.steps=20",
    "student.pretrain.steps=20",
    "teacher.pretrain.batch_size=16",
    "student.pretrain.batch_size=16",
    "stages.teacher_rl.steps=2",
    "stages.teacher_rl.prompts_per_step=4",
    "stages.student_rl.steps=2",
    "stages.student_rl.prompts_per_step=4",
    "stages.warmup.steps=2",
    "stages.warmup.batch_size=8",
    "stages.opd.steps=2",
    "stages.opd.batch_size=8",
    "arms.direct-grpo.overrides.student_rl.steps=2",
    "task.n_test=6",
    "task.n_labeled=16",
    "task.n_unlabeled=64",
    "eval.samples=2",
    "jobs=1",  # one process: the tests that build in parallel say so
    "teacher_process=false",  # the teacher in the trainer (its process costs seconds to start): tests/backends/test_teacher_process.py
]


@pytest.fixture(autouse=True)
def private_store(tmp_path, monkeypatch):
    """Every test writes results to its own store, never to the repository's results/."""
    path = tmp_path / "store.sqlite"
    monkeypatch.setenv("S2D_STORE", str(path))
    return path


@pytest.fixture
def tiny_overrides(tmp_path):
    return TINY_OVERRIDES + [f"run_dir={tmp_path / 'run'}"]


SERVED_TEACHER = ["teacher.builder=", "teacher.server=http://127.0.0.1:9", "teacher.served_model=t"]  # nobody listens there


def decoder_rows(model) -> list[int]:  # noqa: ANN001 - a PreTrainedModel
    """The batch sizes `model`'s decoder is called with from now on, recorded (which forwards GRPO's update makes)."""
    rows: list[int] = []
    model.get_decoder().register_forward_pre_hook(lambda _, args, kwargs: rows.append(len(kwargs["input_ids"])), with_kwargs=True)
    return rows


# A Qwen3-style chat template small enough for the char tokenizer: the reply opens with an empty think block unless the
# prompt is rendered for thinking (`enable_thinking`), which the tiny builders' own template ignores.
QWEN3_LIKE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}"
)


@pytest.fixture
def student_from_path(tmp_path) -> list[str]:
    """Overrides for a student that is a saved tiny model, used as it is (tmp_path/student)."""
    from s2d_bench.models.builders import save, tiny_qwen3_student

    save(*tiny_qwen3_student(), tmp_path / "student")
    return ["student.builder=", f"student.path={tmp_path / 'student'}"]


@pytest.fixture
def served_teacher_run(tmp_path, student_from_path) -> list[str]:
    """A run whose teacher is served (SERVED_TEACHER: a runner is built, nothing asks the server) and whose student is a
    saved tiny model (a served teacher is read with the student's tokenizer), in tmp_path/served."""
    return [*SERVED_TEACHER, *student_from_path, f"run_dir={tmp_path / 'served'}"]


class AgreeingPool:
    """A grading pool stand-in that says every answer is right and keeps what it was asked, so a test of what hands items
    to the pool (evaluation, rewards) sees which pool graded and what reached it."""

    def __init__(self) -> None:
        self.asked: list[tuple] = []

    def run(self, items):
        self.asked.extend(items)
        return {item: True for item in items}


@pytest.fixture
def agreeing_pool() -> AgreeingPool:
    return AgreeingPool()


@pytest.fixture
def python_signals():
    """Python's own Ctrl-C handler and no stop asked, whatever the runner left (a runner may start the tests with SIGINT
    ignored: mutmut's stats pass did); the SIGINT and SIGUSR1 handlers before are put back after."""
    import signal

    from s2d_bench import resume

    resume._requested.clear()
    before = signal.signal(signal.SIGINT, signal.default_int_handler), signal.getsignal(signal.SIGUSR1)
    yield
    signal.signal(signal.SIGINT, before[0])
    signal.signal(signal.SIGUSR1, before[1])
    resume._requested.clear()


@pytest.fixture
def fake_vllm(monkeypatch):
    """vLLM's stand-in (tests/fakes/vllm, made from the real package's API manifest: test_vllm_manifest.py) imported as
    `vllm` for the test, and everything it started shut down after it."""
    import sys
    from pathlib import Path

    fakes = Path(__file__).resolve().parent / "fakes"
    modules = ("vllm", "s2d_bench.generation.vllm")  # all that import vllm
    env = dict(os.environ)
    monkeypatch.syspath_prepend(str(fakes))
    for name in modules:
        monkeypatch.delitem(sys.modules, name, raising=False)
    import vllm

    vllm.INSTANCES.clear()
    yield vllm
    for llm in vllm.INSTANCES:  # a test that failed half-way leaves its engines; their start froze the collector
        llm.llm_engine.engine_core.shutdown()
    for name in modules:
        sys.modules.pop(name, None)
    os.environ.clear()
    os.environ.update(env)
