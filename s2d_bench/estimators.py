"""The estimators of the per-token KL a distillation stage minimises, declared once.

The config check (`DistillConfig.estimator`), its help text, the preflight's refusals (a
direction an estimator has no form of; a backend that has only some of them) and the chunked
objective all read this table; `losses.ESTIMATE` implements each entry (a test checks that the
two name the same estimators). Torch-free, so the config module can read it.
"""

from __future__ import annotations

from dataclasses import dataclass

DIRECTIONS = ("forward", "reverse")  # KL(teacher || student): the warmup; KL(student || teacher): on-policy distillation


@dataclass(frozen=True)
class Estimator:
    summary: str
    directions: tuple[str, ...] = DIRECTIONS  # the KL directions it has a form of
    served: bool = True  # computable from a served teacher's sampled-token and top-k log-probs (no full vocabulary)


ESTIMATORS: dict[str, Estimator] = {
    "full": Estimator("exact KL over the vocabulary", served=False),
    "topk": Estimator("the teacher's top_k tokens plus a tail bucket"),
    "sampled": Estimator("log-ratio of the sampled token as a per-token advantage (reverse KL only: OPD)", ("reverse",)),
}


def names() -> str:
    """'full', 'topk' or 'sampled' (for messages)."""
    quoted = [f"'{name}'" for name in ESTIMATORS]
    return ", ".join(quoted[:-1]) + " or " + quoted[-1]


def described() -> str:
    """Every estimator with its summary, for the config's help text."""
    return "; ".join(f"'{name}': {e.summary}" for name, e in ESTIMATORS.items())


def served() -> list[str]:
    """The estimators a served teacher can feed (vLLM's API gives top-k log-probs, never the vocabulary)."""
    return [name for name, e in ESTIMATORS.items() if e.served]


def usable(direction: str) -> list[str]:
    """The estimators that have a form of this KL direction."""
    return [name for name, e in ESTIMATORS.items() if direction in e.directions]
