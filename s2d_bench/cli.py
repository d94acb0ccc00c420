"""The `s2d-bench` command line. Each command parses, loads config and calls one function."""

from __future__ import annotations

import os
import sys

import click

from s2d_bench.errors import UserError


class CLIError(click.ClickException):
    """A user mistake: one line on stderr, exit status 2, no traceback."""

    exit_code = 2


def _fail_cleanly(fn):
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            raise CLIError(str(exc)) from None

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


@click.group()
@click.version_option(package_name="s2d-bench")
def main() -> None:
    """s2d-bench: the sparse-to-dense post-training workflow as a benchmark.

    Teacher GRPO -> forward-KL warmup -> on-policy distillation -> student GRPO, with avg@k
    after every stage. `s2d-bench run` with no arguments runs the embedded tiny world on the CPU.
    """


@main.command(context_settings={"ignore_unknown_options": False})
@click.option("--config", "config_path", default=None, help="YAML file, or a shipped config name (default: tiny).")
@click.argument("overrides", nargs=-1)
@_fail_cleanly
def run(config_path: str | None, overrides: tuple[str, ...]) -> None:
    """Run every arm of a config, evaluating after each stage.

    OVERRIDES are key.sub=value pairs, e.g. `seed=1 stages.opd.lr=5e-4 eval.samples=8`.
    Finished stages in the run directory are reused, so a rerun resumes where it stopped.
    """
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from s2d_bench.config import load_config
    from s2d_bench.pipeline import Runner
    from s2d_bench.report import render

    cfg = load_config(config_path, list(overrides))
    runner = Runner(cfg)
    click.echo(f"s2d-bench run '{cfg.name}' seed={cfg.seed} backend={cfg.backend} device={runner.device} -> {cfg.output_dir}", err=True)
    records = runner.run()
    click.echo(render(records, runner.arm_paths()))
    click.echo(f"\nrecords: {cfg.output_dir / 'results.jsonl'}")


@main.command(name="ls")
def ls() -> None:
    """List registered backends, stages, tasks, model builders and shipped configs."""
    from s2d_bench.backends import BACKENDS
    from s2d_bench.config import PACKAGE_CONFIGS
    from s2d_bench.models import MODELS
    from s2d_bench.stages import STAGES
    from s2d_bench.tasks import TASKS

    for title, registry in (("backends", BACKENDS), ("stages", STAGES), ("tasks", TASKS), ("models", MODELS)):
        click.echo(f"{title}:")
        for name, summary in registry.summaries().items():
            click.echo(f"  {name:<20} {summary}")
    click.echo("configs:")
    for path in sorted(PACKAGE_CONFIGS.glob("*.yaml")):
        click.echo(f"  {path.stem:<20} {path}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
