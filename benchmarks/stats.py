"""How sure a ratio is: the statistics the benchmarks report next to their medians.

A per-step ratio on DBOS moves by a few percent from one run to the next on a shared 2-core machine (the
steps are milliseconds of database commits; perdure's share is tens of microseconds). One median ratio
alone cannot say whether 1.04 is "within 1.05" or "noise around 1.06", so every side-by-side ratio is
reported with a bootstrap 95 % confidence interval: the samples are resampled with replacement, pairs
kept together where the two sides were measured as pairs (the same moment, the same noise), and the
ratio recomputed each time. Seeded: the same samples give the same interval.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable, Sequence


def ratio_of_medians(ours: Sequence[float], raw: Sequence[float]) -> float:
    return statistics.median(ours) / statistics.median(raw)


def bootstrap_ci(
    estimate: Callable[[list[int]], float], n: int, *, resamples: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """The ``level`` percentile interval of ``estimate(indices)`` over ``resamples`` resamplings of
    ``range(n)`` with replacement."""
    rng = random.Random(seed)
    values = sorted(estimate([rng.randrange(n) for _ in range(n)]) for _ in range(resamples))
    tail = (1 - level) / 2
    return values[int(tail * (resamples - 1))], values[int((1 - tail) * (resamples - 1))]


def paired_ratio_ci(ours: Sequence[float], raw: Sequence[float], *, resamples: int = 1000) -> tuple[float, float]:
    """95 % interval of median(ours) / median(raw) for samples taken in pairs (``ours[i]`` next to ``raw[i]``)."""
    if len(ours) != len(raw):
        raise ValueError(f"paired samples differ in length: {len(ours)} and {len(raw)}")

    def estimate(idx: list[int]) -> float:
        return statistics.median(ours[i] for i in idx) / statistics.median(raw[i] for i in idx)

    return bootstrap_ci(estimate, len(ours), resamples=resamples)

