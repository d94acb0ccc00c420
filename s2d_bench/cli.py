"""The `s2d-bench` command line. Each command parses, loads config and calls one function."""

from __future__ import annotations

import os
import sys

import click
from pathlib import Path

from s2d_bench.errors import Stopped, UserError
from s2d_bench.tasks.base import EXTRACTIONS


class CLIError(click.ClickException):
    """A user mistake: one line on stderr, exit status 2, no traceback."""

    exit_code = 2


def _fail_cleanly(fn):
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            raise CLIError(str(exc)) from None
        except Stopped as exc:  # a stage asked to stop (a first Ctrl-C, SIGUSR1) saved where it was
            click.echo(f"\n{exc}", err=True)
            sys.exit(130)
        except KeyboardInterrupt:  # Ctrl-C (or a kill while workers build): one line, and what a rerun does
            click.echo("\ninterrupted: finished stages and evaluations are kept; run the same command again to resume", err=True)
            sys.exit(130)

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


@click.group()
@click.version_option(package_name="s2d-bench")
@click.option("--local_rank", "--local-rank", type=int, default=None, hidden=True,
              help="set by the `deepspeed` launcher; the rank is read from the environment")
def main(local_rank: int | None) -> None:
    """s2d-bench: the sparse-to-dense post-training workflow as a benchmark.

    Teacher GRPO -> forward-KL warmup -> on-policy distillation -> student GRPO, with avg@k
    after every stage. `s2d-bench run` with no arguments runs the embedded tiny world on the CPU.
    """


@main.command(context_settings={"ignore_unknown_options": False})
@click.option("--config", "config_path", default=None, help="YAML file, or a shipped config name (default: tiny).")
@click.option("--executor", type=click.Choice(["local", "slurm"]), default=None,
              help="Where nodes are built (config `executor`): local, or slurm (a job a node, with dependencies; see `slurm:`).")
@click.argument("overrides", nargs=-1)
@_fail_cleanly
def run(config_path: str | None, executor: str | None, overrides: tuple[str, ...]) -> None:
    """Run every arm of a config, evaluating after each stage.

    OVERRIDES are key.sub=value pairs, e.g. `seed=1 stages.opd.lr=5e-4 eval.samples=8`.
    Finished stages in the run directory are reused, so a rerun resumes where it stopped.
    """
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from s2d_bench.config import load_config

    cfg = load_config(config_path, [*overrides, *([f"executor={executor}"] if executor else [])])  # before torch loads: bad keys fail at once
    from s2d_bench import distributed
    from s2d_bench.pipeline import Runner, run_all
    from s2d_bench.report import render

    runner = Runner(cfg)
    click.echo(f"s2d-bench run '{cfg.name}' seed={cfg.seed} backend={cfg.backend} device={runner.device} -> {cfg.output_dir}", err=True)
    done = run_all([runner], lambda line: click.echo(line, err=True) if line.startswith(" ") else None)  # the jobs queued
    if done is None:
        return click.echo(f"queued on Slurm: s2d-bench status {cfg.output_dir}")
    (records,) = done
    if distributed.is_main():  # under a multi-process launch the other ranks hold no records
        click.echo(render(records, runner.arm_paths()))
        click.echo(f"\nrecords: {cfg.output_dir / 'results.jsonl'}")
    distributed.shutdown()


@main.command()
@click.option("--config", "config_path", default=None, help="YAML file, or a shipped config name (default: tiny).")
@click.option("--drop", "drops", multiple=True, help="Stage to drop from the full workflow: teacher-rl, warmup, opd, student-rl (repeatable).")
@click.option("--baseline", "baselines", multiple=True, help="Baseline arm to add: direct-grpo, replay, raw-bridge (repeatable).")
@click.option("--all", "everything", is_flag=True, help="Every drop and every baseline: the component grid.")
@click.option("--sweep", "sweeps", multiple=True,
              help="A stage setting and its values, e.g. stages.opd.estimator=full,topk,sampled: an arm per value, sharing the stages "
                   "before it (repeatable, combinable with --drop).")
@click.option("--seeds", type=int, default=1, show_default=True, help="Seeds seed, seed+1, ...: the intervals hold their seed-to-seed variance (t with seeds-1 "
                   "degrees of freedom: 1 seed covers problems only, 2 give very wide intervals, 5 is the usual minimum). "
                   "Each unresolved comparison says how many seeds would resolve it.")
@click.option("--executor", type=click.Choice(["local", "slurm"]), default=None,
              help="Where nodes are built (config `executor`): local, or slurm (a job a node, with dependencies; see `slurm:`).")
@click.argument("overrides", nargs=-1)
@_fail_cleanly
def ablate(config_path: str | None, drops: tuple[str, ...], baselines: tuple[str, ...], everything: bool, sweeps: tuple[str, ...], seeds: int,
           executor: str | None, overrides: tuple[str, ...]) -> None:
    """Run the full workflow and its ablations; shared stages run once (content-addressed cache).

    Finished stages are reused across arms, seeds, reruns and `s2d-bench run`; killing it and
    running it again finishes the grid. Prints the leaderboard of the config's suite at the end.
    """
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import dataclasses
    import time

    from s2d_bench.ablations import ablation_config, cache_savings
    from s2d_bench.config import load_config

    if seeds < 1:
        raise CLIError("--seeds must be >= 1")
    overrides = (*overrides, *([f"executor={executor}"] if executor else []))
    cfg = ablation_config(load_config(config_path, list(overrides)), list(drops), list(baselines), everything, list(sweeps))
    from s2d_bench.leaderboards import build, render  # the heavy stack, once the arguments are known good
    from s2d_bench.pipeline import Runner, run_all

    start = time.perf_counter()
    runners = [Runner(dataclasses.replace(cfg, seed=seed)) for seed in range(cfg.seed, cfg.seed + seeds)]
    done = run_all(runners, lambda line: click.echo(line if line.startswith(" ") else
                                                    f"s2d-bench ablate '{cfg.name}' {line} arms={','.join(cfg.arms)} -> {cfg.output_dir}", err=True))
    if done is None:
        return click.echo(f"queued on Slurm: s2d-bench status {cfg.output_dir}")
    if runners[0].store is None:  # a rank other than 0 under a multi-process launch: rank 0 reports
        return
    click.echo(render(build(runners[0].store, cfg.name), "md"))
    saved = cache_savings(runners)
    click.echo(f"\nwall {time.perf_counter() - start:.0f} s; stages trained {saved['stages_run']} instead of {saved['stages_alone']} "
               f"({saved['train_seconds_run']:.0f} s of training instead of {saved['train_seconds_alone']:.0f} s, counting stages reused "
               f"from earlier runs at their original cost); store: {runners[0].store.path}")


@main.group(invoke_without_command=True)
@click.option("--suite", default=None, help="Suite (a config's name, or an eval --suite); default: the only one, else tiny.")
@click.option("--format", "fmt", default="md", show_default=True, help="md, csv, html or latex.")
@click.option("--store", "store_path", default=None, help="Results store (default: $S2D_STORE, else results/s2d-bench.sqlite).")
@click.option("--every-config", is_flag=True, help="Arms of every config the suite ran, labelled by config hash, or by backend with a backend column when each config ran on its own backend (default: the newest config).")
@click.pass_context
@_fail_cleanly
def leaderboard(ctx: click.Context, suite: str | None, fmt: str, store_path: str | None, every_config: bool) -> None:
    """Print a suite's leaderboard: avg@k [95% CI] per arm, delta vs full, budget, C1/C2 detail."""
    from s2d_bench.store import Store

    store = Store(store_path)
    if not store.path.exists():  # a mistyped --store is not an empty leaderboard
        raise CLIError(f"no results store at '{store.path}': give --store the file a run, ablation or eval wrote "
                       "(default: $S2D_STORE, else results/s2d-bench.sqlite)")
    ctx.obj = (store, suite or _default_suite(store), every_config)
    if ctx.invoked_subcommand is None:
        from s2d_bench.leaderboards import build, render

        click.echo(render(build(*ctx.obj), fmt).rstrip("\n"))


@leaderboard.command()
@click.option("--out", "out_dir", default="leaderboards", show_default=True, help="Folder the tables and the plot go to.")
@click.option("--hub-dir", default=None, help="Instead: a Hugging Face dataset folder (Parquet tables, dataset card, tables) to upload as it is.")
@click.pass_obj
@_fail_cleanly
def publish(obj, out_dir: str, hub_dir: str | None) -> None:
    """Write the suite's tables (md, csv, html, tex), its stage plot and its ablation figure (png) into OUT, or with --hub-dir a dataset folder:
    per-problem scores, records, arms and diagnostics as Parquet, a dataset card with the protocol, seeds and versions."""
    from pathlib import Path

    from s2d_bench.leaderboards import build, publish as write

    from s2d_bench.writable import check_folder

    check_folder(Path(hub_dir or out_dir), "--hub-dir" if hub_dir else "--out")
    if hub_dir:
        from s2d_bench.leaderboards.hub import write_hub_dir

        paths = write_hub_dir(*obj, Path(hub_dir))
    else:
        paths = write(build(*obj), Path(out_dir))
    for path in paths:
        click.echo(path)


def _default_suite(store) -> str:
    suites = store.suites()
    return suites[0] if len(suites) == 1 else "tiny"


@main.group()
def store() -> None:
    """The results store (SQLite) that runs, ablations and evaluations write to."""


@store.command()
@click.argument("folders", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--store", "store_path", default=None, help="Store to write (default: $S2D_STORE, else results/s2d-bench.sqlite).")
@click.option("--eval-suite", default="eval", show_default=True, help="Suite of `s2d-bench eval` folders whose records name none.")
@_fail_cleanly
def rebuild(folders: tuple[str, ...], store_path: str | None, eval_suite: str) -> None:
    """Make the store again from run directories and `s2d-bench eval` output folders (FOLDERS).

    Rows already in the store are replaced, never duplicated; a corrupt store file must be moved aside first.
    """
    from pathlib import Path

    from s2d_bench.rebuild import rebuild as rebuild_store
    from s2d_bench.store import Store

    target = Store(store_path)
    counts = rebuild_store(target, [Path(f) for f in folders], eval_suite)
    click.echo(f"{target.path}: {counts['evals']} evaluation records, {counts['arms']} arm files, {counts['diagnostics']} diagnostics")


@main.command(name="eval")
@click.option("--model", required=True, help="Local HF directory or hub id.")
@click.option("--tasks", "tasks", default="math500", show_default=True, help="Comma-separated benchmarks (see `s2d-bench ls`).")
@click.option("--samples", type=int, default=None, help="k samples per problem (default: the benchmark's, 16).")
@click.option("--limit", type=int, default=None, help="Only the first N problems of each benchmark.")
@click.option("--engine", default="hf", show_default=True, help="hf, hf-compiled (compiled decode step) or vllm.")
@click.option("--data", default=None, help="JSON Lines file, or a folder of them; default $S2D_DATA_DIR, else the hub.")
@click.option("--out", "out_dir", default="runs/eval", show_default=True, help="Where results and completions go.")
@click.option("--temperature", type=float, default=None)
@click.option("--top-p", type=float, default=None)
@click.option("--top-k", type=int, default=None)
@click.option("--max-new-tokens", type=int, default=None)
@click.option("--extraction", type=click.Choice(list(EXTRACTIONS)), default=None,
              help="The answer a completion gives: the last \\boxed{}, or the last boxes of one answer joined (math-verify's way; "
                   "the benchmarks' default).")
@click.option("--thinking/--no-thinking", default=False, show_default=True, help="Qwen3 thinking mode.")
@click.option("--device", default="auto", show_default=True)
@click.option("--dtype", default="auto", show_default=True, help="auto, float32, bfloat16 or float16.")
@click.option("--batch-prompts", type=int, default=8, show_default=True, help="HF engine: prompts per batch (x k sequences).")
@click.option("--max-batch-tokens", type=int, default=0, show_default=True,
              help="HF engine: KV-cache positions per batch, k x (longest prompt + max new tokens) per problem; 0: no bound. "
                   "Bounds memory at long max-new-tokens; the completions are the same.")
@click.option("--tensor-parallel", type=int, default=1, show_default=True, help="vLLM engine: GPUs per model.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--grading-timeout", type=float, default=5.0, show_default=True, help="Seconds per answer before a grader is killed.")
@click.option("--store", "store_path", default=None, help="Results store the records also go to (default: $S2D_STORE, else results/s2d-bench.sqlite).")
@click.option("--suite", default="eval", show_default=True, help="Leaderboard suite the records belong to.")
@_fail_cleanly
def eval_cmd(model: str, tasks: str, engine: str, out_dir: str, thinking: bool, device: str, dtype: str, batch_prompts: int,
             max_batch_tokens: int, tensor_parallel: int, store_path: str, suite: str, **opts) -> None:
    """Evaluate one model on benchmarks: avg@k, pass@k, maj@k, grader agreement.

    Results and every completion go to OUT/<model>-<hash>/<benchmark>/ (the hash keys the options), so re-grading never
    regenerates and a second model evaluated into the same OUT keeps its own files.
    """
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from pathlib import Path

    from s2d_bench.tasks import BENCHMARKS
    from s2d_bench.tasks.benchmarks import GROUPS

    names = [t.strip() for t in tasks.split(",") if t.strip()]
    for name in names:  # before torch loads: a misspelt benchmark fails at once
        if name not in GROUPS:
            BENCHMARKS.check(name)
    from s2d_bench.generation.engine import EngineConfig
    from s2d_bench.harness.suite import SuiteOptions, render, run_suite

    import transformers

    transformers.utils.logging.disable_progress_bar()  # a bar per weight load would drown the evaluation's own
    engine_cfg = EngineConfig(device=device, dtype=dtype, prompts_per_batch=batch_prompts, max_batch_tokens=max_batch_tokens,
                              tensor_parallel_size=tensor_parallel, thinking=thinking)
    from s2d_bench.store import Store

    records, folder = run_suite(model, names, engine, engine_cfg, SuiteOptions(**opts), Path(out_dir), Store(store_path), suite)
    click.echo(render(records))
    click.echo(f"\nresults: {', '.join(str(folder / r['task'] / 'results.json') for r in records)}")


@main.command()
@click.argument("model")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--served-model-name", default=None, help="The name clients ask for (default: MODEL, as vLLM).")
@click.option("--max-logprobs", type=int, default=20, show_default=True,
              help="Most log-probs a request may ask for per position, as vLLM's flag (-1: the vocabulary).")
@click.option("--device", default="auto", show_default=True)
@click.option("--dtype", default="auto", show_default=True, help="auto, float32, bfloat16 or float16.")
@_fail_cleanly
def serve(model: str, host: str, port: int, served_model_name: str | None, max_logprobs: int, device: str, dtype: str) -> None:
    """Serve MODEL over vLLM's completions API (the subset a served teacher uses) on the hf engine.

    For CPU machines, tests and users without vLLM: `teacher: {server: http://HOST:PORT}` reaches it as it would reach
    `vllm serve MODEL --max-logprobs K`. Prompts as text or token ids, seeded samples, `logprobs` and
    `prompt_logprobs` with top-k alternatives, /tokenize, /detokenize, /v1/models.
    """
    import importlib.util

    if importlib.util.find_spec("fastapi") is None or importlib.util.find_spec("uvicorn") is None:
        raise UserError("s2d-bench serve needs FastAPI and uvicorn: pip install 's2d-bench[serve]'")
    if max_logprobs < -1:
        raise UserError("--max-logprobs must be >= 0, or -1 for the whole vocabulary")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from s2d_bench.served.server import serve as run_server

    run_server(model, host, port, served_model_name, max_logprobs, device, dtype)


@main.command()
@click.argument("folder")
@click.option("--out", "out_dir", default=None, help="Where the pages go (default: FOLDER/browse).")
@_fail_cleanly
def browse(folder: str, out_dir: str | None) -> None:
    """Write one static HTML page per evaluation under FOLDER (a run directory or an eval --out folder).

    Each page: the avg@k with its interval, every problem with its gold answer and its k samples
    (extracted answer, both graders' verdicts), and filters for wrong, right, no answer and grader
    disagreement. No server: open FOLDER/browse/index.html.
    """
    from pathlib import Path

    from s2d_bench.browse import write_pages

    for path in write_pages(Path(folder), Path(out_dir) if out_dir else None):
        click.echo(path)


@main.command(name="plan")
@click.option("--config", "config_path", default=None, help="YAML file, or a shipped config name (default: tiny).")
@click.option("--world", type=int, default=None, help="Ranks the memory is estimated for (default: the launch's, else 1).")
@click.argument("overrides", nargs=-1)
@_fail_cleanly
def plan_cmd(config_path: str | None, world: int | None, overrides: tuple[str, ...]) -> None:
    """Print a run's plan (nodes, their arms, which are built) and its memory per rank, phase by phase, offline.

    Loads no weights and starts no process group: model shapes come from a local folder's config.json, or for the
    shipped configs' hub models from a shipped table. Exits with status 2, naming the settings to change, when a
    phase would not fit preflight.device_memory_gb: check a long job before submitting it.
    """
    from s2d_bench.config import load_config

    if world is not None and world < 1:
        raise CLIError("--world must be >= 1")
    loaded = load_config(config_path, list(overrides))  # before torch loads: bad keys fail at once
    from s2d_bench import budget, distributed, preflight
    from s2d_bench.harness.targets import TASK, entries, run_targets
    from s2d_bench.identity import run_hash
    from s2d_bench.plan import plan
    from s2d_bench.rundir import RunDir
    from s2d_bench.tasks import TASKS

    cfg = preflight.check_config(loaded)
    world = world or distributed.launched_world()
    nodes, folders = plan(cfg), RunDir(cfg.output_dir, cfg, run_hash(cfg), 0.0)
    task = TASKS.get(cfg.task.name)(cfg.task)
    click.echo(f"plan of '{cfg.name}' seed={cfg.seed} backend={cfg.backend}: {len(nodes)} nodes -> {cfg.output_dir}")
    for node in nodes:
        state = "served" if node.served else "given" if node.from_path else "built" if (folders.node_dir(node) / "model").is_dir() else "to build"
        click.echo(f"  {node.id:<26} {node.role:<8} {state:<9} {', '.join(node.arms) or '(base)'}")
    evaluates_task = any(e.name == TASK for e in entries(cfg.eval.benchmarks))  # else the task's data (a training set) is not read
    targets = run_targets(cfg, task.grader, task.splits().test if evaluates_task else [])
    report = preflight.offline_report(cfg, nodes, targets, world)
    click.echo(budget.render(report))
    preflight.refuse_what_does_not_fit(report)


@main.group()
def config() -> None:
    """What a config holds and what each key means."""


@config.command()
@click.option("--config", "config_path", default=None, help="YAML file, or a shipped config name (default: tiny).")
@click.option("--changed", is_flag=True, help="Only the keys whose value differs from the default.")
@click.argument("args", nargs=-1)
@_fail_cleanly
def show(config_path: str | None, changed: bool, args: tuple[str, ...]) -> None:
    """Print every key with its value, its default where they differ, and its help text.

    ARGS: an optional KEY (a section such as `stages.opd`, or one key) and key.sub=value overrides, as `run` takes them.
    """
    from s2d_bench.config import load_config
    from s2d_bench.configdoc import describe, render

    keys = [a for a in args if "=" not in a]
    if len(keys) > 1:
        raise CLIError(f"config show takes one KEY, got {', '.join(keys)}")
    docs = describe(load_config(config_path, [a for a in args if "=" in a]), keys[0] if keys else None)
    click.echo(render([d for d in docs if d.changed or not changed]))


@main.command(name="build-node", hidden=True)
@click.argument("runs", type=click.Path(exists=True, dir_okay=False))
@click.argument("seed", type=int)
@click.argument("node")
@_fail_cleanly
def build_node(runs: str, seed: int, node: str) -> None:
    """A Slurm job's work (slurm.py): build NODE of the run of seed SEED among the configs in RUNS (slurm/runs.json)."""
    import json

    from s2d_bench import resume

    with resume.listening(interrupt=False):  # Slurm's signal before the time limit (save, stop, requeue), from before torch loads
        from s2d_bench import distributed, slurm
        from s2d_bench.pipeline import build_node as build

        cfg = next((c for c in json.loads(Path(runs).read_text()) if c["seed"] == seed), None)
        if cfg is None:
            raise CLIError(f"{runs} holds no run of seed {seed}")
        try:
            build(cfg, node, cfg["threads"])
        except Stopped as exc:
            if not slurm.requeue(str(exc)):
                raise
            return
    click.echo(f"s2d-bench build-node: {node} built, rank {distributed.rank()} of {distributed.world()}", err=True)
    distributed.shutdown()


@main.command(hidden=True)
@click.argument("runs", type=click.Path(exists=True, dir_okay=False))
@_fail_cleanly
def collect(runs: str) -> None:
    """The last Slurm job of a submission: the runs in RUNS (slurm/runs.json), built by their jobs, stored and reported."""
    import json

    from s2d_bench.config import RunConfig, from_dict
    from s2d_bench.pipeline import Runner, run_all

    runners = [Runner(from_dict(RunConfig, {**c, "executor": "local", "jobs": 1})) for c in json.loads(Path(runs).read_text())]
    for records in run_all(runners):
        click.echo(f"seed {records[0]['seed'] if records else '?'}: {len(records)} records stored")


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@_fail_cleanly
def status(run_dir: str) -> None:
    """One line per node of the run's Slurm jobs: done, queued, running, failed (with its log's last error line)."""
    from s2d_bench import slurm

    click.echo(slurm.render(slurm.status(Path(run_dir))))


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@_fail_cleanly
def cancel(run_dir: str) -> None:
    """Cancel the run's queued and running Slurm jobs (finished nodes stay; submitting again resumes)."""
    from s2d_bench import slurm

    cancelled = slurm.cancel(Path(run_dir))
    click.echo(f"cancelled {len(cancelled)} job(s){': ' + ' '.join(cancelled) if cancelled else ''}")


@main.command(name="ls")
def ls() -> None:
    """List registered backends, engines, stages, tasks, benchmarks, graders, model builders and shipped configs."""
    from s2d_bench.backends import BACKENDS
    from s2d_bench.config import shipped_configs
    from s2d_bench.generation import ENGINES
    from s2d_bench.harness.graders import GRADERS
    from s2d_bench.models import MODELS
    from s2d_bench.reporting import REPORTERS
    from s2d_bench.stages import STAGES
    from s2d_bench.tasks import BENCHMARKS, TASKS

    registries = (("backends", BACKENDS), ("engines (eval.engine, rollout.engine, eval --engine)", ENGINES), ("stages", STAGES),
                  ("tasks", TASKS), ("benchmarks", BENCHMARKS), ("graders", GRADERS), ("models", MODELS),
                  ("reporters (report_to)", REPORTERS))
    for title, registry in registries:
        click.echo(f"{title}:")
        for name, summary in registry.summaries().items():
            click.echo(f"  {name:<20} {summary}")
    from s2d_bench.tasks.benchmarks import GROUPS

    click.echo("benchmark groups (eval --tasks, eval.benchmarks):")
    for name, members in GROUPS.items():
        click.echo(f"  {name:<20} {', '.join(members)}")
    click.echo("configs:")
    for name, path in shipped_configs().items():
        click.echo(f"  {name:<20} {path}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
