"""Statistics over seeds for the ablation: mean and sample std, paired differences with a 95% t interval, verdicts.

    per variant and metric:   mean, std (n - 1), n over seeds
    per pair (a, b):          d_s = a_s - b_s for the seeds both ran (paired by seed: same data order, same init);
                              mean(d) +- t_{0.975, n-1} * std(d) / sqrt(n)
    verdict of "a > b":       "holds" (interval above 0), "reversed" (below 0), "not established" (contains 0,
                              or fewer than 2 paired seeds)

Each interval covers one comparison: no correction for the many a table makes (with 18 claims at 95%, about one
interval excludes 0 by chance). The t quantiles are tabulated (no scipy at run time); tests check them against
scipy.stats.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

# t_{0.975, df} for df = 1..30 (two-sided 95%); beyond, the Cornish-Fisher expansion around the normal's 1.95996.
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
Z975 = 1.959963984540054
HOLDS, REVERSED, NOT_ESTABLISHED = "holds", "reversed", "not established"


def t975(df: int) -> float:
    """The 0.975 quantile of Student's t with `df` degrees of freedom (df >= 1), to 3 decimals."""
    if df < 1:
        raise ValueError(f"t975 needs df >= 1, got {df}")
    if df <= len(T975):
        return T975[df - 1]
    z, v = Z975, float(df)
    return (z + (z**3 + z) / (4 * v) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * v**2)
            + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * v**3))


def mean_std(values: list[float]) -> dict[str, Any]:
    """{"mean", "std" (sample, n - 1; 0 with one value), "n", "values", "ci95" (the mean's 95% t interval, or None)}."""
    n = len(values)
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if n > 1 else 0.0
    ci = [mean - t975(n - 1) * std / math.sqrt(n), mean + t975(n - 1) * std / math.sqrt(n)] if n > 1 else None
    return {"mean": mean, "std": std, "n": n, "values": list(values), "ci95": ci}


def paired(a: dict[int, float], b: dict[int, float]) -> dict[str, Any] | None:
    """a - b over the seeds both have ({seed: value} each): mean_std of the differences plus "seeds"; None when no
    seed is shared."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    return {**mean_std([a[s] - b[s] for s in seeds]), "seeds": seeds}


def verdict(diff: dict[str, Any] | None) -> str:
    """For the claim "a > b", given paired(a, b): holds / reversed / not established (see the module docstring)."""
    if diff is None or diff["ci95"] is None:
        return NOT_ESTABLISHED
    low, high = diff["ci95"]
    if low > 0:
        return HOLDS
    if high < 0:
        return REVERSED
    return NOT_ESTABLISHED
