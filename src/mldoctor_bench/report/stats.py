"""Pure numbers for reports: seed summaries with t-intervals, train-test gaps, correlations.

Everything here takes and returns plain data frames (the tidy results table or summaries of it);
nothing reads files or draws.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from mldoctor_bench.families import ATTRIBUTE, INVERSION, MEMBERSHIP, PRIVACY_AUDIT, STEALING
from mldoctor_bench.metrics import too_few_negatives
from mldoctor_bench.report import intervals, significance
from mldoctor_bench.report.settings import LABEL as SETTINGS
from mldoctor_bench.results import OK
from mldoctor_bench.threat_catalog import short_name

# Each attack family's main metrics, most preferred first. A family's charts and tables use the
# first metric, then each later one that covers threat models the earlier ones miss (e.g. MIFace
# under (W,N) reports only an MSE while GMI under (W,S) reports the evaluator's accuracy).
FAMILY_METRICS: dict[str, tuple[str, ...]] = {
    "membership": ("auc", "accuracy"),
    "inversion": ("eval_accuracy", "mse"),
    "attribute": ("accuracy", "f1"),
    "stealing": ("agreement", "accuracy"),
    "privacy_audit": ("epsilon_lower_bound",),
    "worst_case": ("tpr_at_fpr_0.01", "auc"),
}
# Substrings of this package's attack names that place an attack in its family, for tables written
# before rows carried their attack's declared family.
FAMILY_PATTERNS = (
    ("membership", MEMBERSHIP),
    ("inversion", INVERSION),
    ("attribute", ATTRIBUTE),
    ("steal", STEALING),
    ("audit", PRIVACY_AUDIT),
)
GENERIC_METRICS = ("auc", "accuracy", "agreement", "eval_accuracy", "mse")
# A group of runs that differ only in their seed: the settings label keeps swept settings apart.
CELL = ["dataset", "arch", "defense", SETTINGS]
SERIES = ["attack", "threat_model", "variant"]
LOW_FPR_PREFIX = "tpr_at_fpr_"
AUDIT_METRICS = (
    "epsilon",
    "epsilon_lower_bound",
    "correct_guesses",
    "guesses",
    "fdp_epsilon_lower_bound",
    "fdp_correct_guesses",
    "fdp_guesses",
    "canaries",
    "delta",
)
# How membership attacks are ranked against each other: the first metric, ties by the second.
STRENGTH = ("tpr_at_fpr_0.01", "auc")


@dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation, a 95% confidence interval and how it was made, over ``n`` values.

    ``method`` is ``t`` (over seeds, cut to the metric's range), ``seeds+within`` (over seeds, each
    run's own error included: :func:`combined_summary`), ``bootstrap`` (one run, over its evaluation
    examples), ``wilson`` (one run, a proportion of a known count), ``hanley-mcneil`` (one run's AUC,
    where no scores were bootstrapped) or ``""`` (no interval). With ``n == 1`` the sd is NaN.
    """

    mean: float
    sd: float
    n: int
    ci_low: float
    ci_high: float
    method: str = ""

    @property
    def half_width(self) -> float:
        return (self.ci_high - self.ci_low) / 2


def t_summary(values: Sequence[float], level: float = 0.95, metric: str = "") -> Summary:
    """Mean, sd (ddof=1) and the ``level`` t-interval ``mean +- t((1+level)/2, n-1) * sd / sqrt(n)``,
    cut to the range of ``metric`` (see :func:`intervals.metric_range`); no interval for one value."""
    x = np.asarray([v for v in values if not pd.isna(v)], dtype=np.float64)
    n = len(x)
    if n == 0:
        return Summary(math.nan, math.nan, 0, math.nan, math.nan)
    mean = float(x.mean())
    if n == 1:
        return Summary(mean, math.nan, 1, math.nan, math.nan)
    low, high = intervals.clip_interval(*intervals.t_interval(x, level), metric)
    return Summary(mean, float(x.std(ddof=1)), n, low, high, "t")


def family(attack: str) -> str:
    """The attack family of an attack name (``membership_metric`` -> ``membership``), for tables
    written before rows carried their attack's declared ``family``; else the name."""
    lowered = attack.lower()
    for pattern, fam in FAMILY_PATTERNS:
        if pattern in lowered:
            return fam
    return attack


def families(frame: pd.DataFrame) -> pd.Series:
    """Each row's attack family: its ``family`` column, or (older tables, empty cells) the name rule."""
    guessed = frame["attack"].map(family)
    if "family" not in frame:
        return guessed
    declared = frame["family"].fillna("").astype(str)
    return declared.where(declared != "", guessed)


def ok_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows with status ok that carry a metric value (with an empty settings label if it had none)."""
    keep = (frame["status"] == OK) & (frame["metric"] != "") & frame["value"].notna()
    rows = frame[keep]
    return rows if SETTINGS in rows else rows.assign(**{SETTINGS: ""})


def attack_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Ok metric rows of attacks (not the target's utility rows), with a ``family`` column."""
    rows = ok_rows(frame)
    rows = rows[rows["attack"] != "target"].copy()
    rows["family"] = families(rows)
    return rows[rows["family"] != "exposure"]  # how attacks agree, not an attack: its own report section


def family_metrics(rows: pd.DataFrame, fam: str) -> list[str]:
    """The metrics that represent ``fam`` in charts and tables (see :data:`FAMILY_METRICS`).

    Greedy over the family's preference list: a metric is used if it covers a threat model that no
    earlier metric covers. Unknown families use the first of :data:`GENERIC_METRICS` they report.
    """
    mine = rows[rows["family"] == fam]
    prefs = FAMILY_METRICS.get(fam, GENERIC_METRICS)
    chosen, covered = [], set()
    for metric in prefs:
        tms = set(mine.loc[mine["metric"] == metric, "threat_model"])
        if tms - covered:
            chosen.append(metric)
            covered |= tms
    if not chosen and len(mine):
        chosen = [sorted(mine["metric"].unique())[0]]
    return chosen


def main_metric_rows(frame: pd.DataFrame) -> dict[tuple[str, str], pd.DataFrame]:
    """``{(family, metric): rows}`` for every family's main metrics (see :func:`family_metrics`)."""
    rows = attack_rows(frame)
    out = {}
    for fam in sorted(rows["family"].unique()):
        mine = rows[rows["family"] == fam]
        for metric in family_metrics(rows, fam):
            out[(fam, metric)] = mine[mine["metric"] == metric]
    return out


def table_metric_rows(frame: pd.DataFrame) -> dict[tuple[str, str], pd.DataFrame]:
    """``{(family, metric): rows}`` for every metric of :data:`FAMILY_METRICS` a family reports
    (tables show them all, e.g. MemInf AUC and accuracy); unknown families as in :func:`main_metric_rows`."""
    rows = attack_rows(frame)
    out = main_metric_rows(frame)
    for fam in sorted(rows["family"].unique()):
        mine = rows[rows["family"] == fam]
        for metric in FAMILY_METRICS.get(fam, ()):
            if (mine["metric"] == metric).any():
                out.setdefault((fam, metric), mine[mine["metric"] == metric])
    return dict(sorted(out.items()))


SINGLE_RUN_KEY = ["config_hash", "attack", "threat_model", "variant", "metric"]


def single_runs(frame: pd.DataFrame) -> set[tuple[str, str, str]]:
    """``(config_hash, attack, threat_model)`` of attack runs that are alone in their group (one seed
    of their dataset/arch/defense and settings): the only ones a table shows with n=1."""
    rows = attack_rows(frame)
    runs = rows[CELL + ["attack", "threat_model", "config_hash"]].drop_duplicates()
    alone = runs.groupby(CELL + ["attack", "threat_model"])["config_hash"].transform("size") == 1
    return set(runs.loc[alone, ["config_hash", "attack", "threat_model"]].itertuples(index=False, name=None))


# Proportions a single run gets a Wilson interval for: family -> {metric: the count metrics that sum to its n}.
WILSON: dict[str, dict[str, tuple[str, ...]]] = {
    "membership": {"accuracy": ("n_members", "n_nonmembers")},
    "inversion": {"eval_accuracy": ("reconstructions",)},
    "attribute": {"accuracy": ("n_test",), "best_baseline_accuracy": ("n_test",)},
    "stealing": {"agreement": ("n_test",), "accuracy": ("n_test",), "baseline_agreement": ("n_test",)},
}


def single_run_intervals(frame: pd.DataFrame, boot: pd.DataFrame | None = None) -> pd.DataFrame:
    """Intervals for one run's numbers (columns :data:`SINGLE_RUN_KEY`, ``ci_low, ci_high, method``):

    - ``bootstrap``: the rows of ``boot`` (see :func:`collect.score_intervals`) whose estimate from
      the saved scores equals the table's value, so the interval is around the number shown;
    - ``wilson``: a proportion over the count of examples it was measured on (:data:`WILSON`): a
      membership attack's accuracy over its ``n_members + n_nonmembers`` examples, inversion's
      ``eval_accuracy`` over its ``reconstructions``, attribute inference's accuracy (and its
      baseline's) and a stolen model's agreement and accuracy (and its baseline's agreement) over
      their ``n_test`` examples;
    - ``hanley-mcneil``: a membership AUC without a bootstrap, from its member and non-member counts.
    Other metrics of a single run get no interval (nothing per example is saved for them)."""
    rows = attack_rows(frame)
    pieces = []
    if boot is not None and not boot.empty:
        joined = rows.merge(boot, on=SINGLE_RUN_KEY)
        joined = joined[(joined["estimate"] - joined["value"]).abs() <= 1e-6]
        pieces.append(joined.assign(method="bootstrap")[SINGLE_RUN_KEY + ["ci_low", "ci_high", "method"]])
    run = ["config_hash", "attack", "threat_model", "variant", "seed"]
    wide = rows.pivot_table(index=run, columns="metric", values="value", aggfunc="first")
    records, family_of = [], dict(zip(rows["attack"], rows["family"]))
    for key, r in wide.iterrows():
        present = r.dropna()
        for metric, counts in WILSON.get(family_of[key[1]], {}).items():
            if metric not in present or not set(counts) <= set(present.index):
                continue
            low, high = intervals.wilson_interval(float(r[metric]), float(sum(r[c] for c in counts)))
            records.append(dict(zip(SINGLE_RUN_KEY, (*key[:4], metric)), ci_low=low, ci_high=high, method="wilson"))
        present_auc = "auc" in present and {"n_members", "n_nonmembers"} <= set(present.index)
        if present_auc and family_of[key[1]] == "membership":
            low, high = significance.auc_interval(float(r["auc"]), int(r["n_members"]), int(r["n_nonmembers"]))
            records.append(
                dict(zip(SINGLE_RUN_KEY, (*key[:4], "auc")), ci_low=low, ci_high=high, method="hanley-mcneil")
            )
    pieces.append(pd.DataFrame(records, columns=SINGLE_RUN_KEY + ["ci_low", "ci_high", "method"]))
    out = pd.concat(pieces, ignore_index=True)
    return out.drop_duplicates(SINGLE_RUN_KEY, keep="first")  # a bootstrap, where there is one, first


def combined_summary(
    values: Sequence[float], errors: Sequence[float], level: float = 0.95, metric: str = ""
) -> Summary:
    """The mean of several runs' values with an interval that combines each run's own uncertainty
    (standard errors ``errors``) with the spread between runs: ``SE^2 = max(s^2, mean(e^2)) / n``,
    i.e. the between-run variance estimated as ``max(0, s^2 - mean(e^2))`` (method of moments) plus
    the mean within-run variance, normal quantile, cut to the metric's range. With two or three seeds
    a t-interval on the spread alone is wide and unstable (t(1) = 12.7); the runs' own errors floor it."""
    x, e = np.asarray(values, dtype=float), np.asarray(errors, dtype=float)
    n, mean, sd = len(x), float(x.mean()), float(x.std(ddof=1))
    se = math.sqrt(max(sd * sd, float((e * e).mean())) / n)
    z = float(scipy_stats.norm.ppf((1 + level) / 2))
    low, high = intervals.clip_interval(mean - z * se, mean + z * se, metric)
    return Summary(mean, sd, n, low, high, "seeds+within")


def summarise(
    rows: pd.DataFrame, by: list[str], level: float = 0.95, single: pd.DataFrame | None = None
) -> pd.DataFrame:
    """One line per ``by`` group: mean, sd, n, ci_low, ci_high and method of ``value`` over the
    group (the seeds). A group of one run takes its interval from ``single`` (see
    :func:`single_run_intervals`) where it has one; a group of several runs that all have one
    combines them with the spread between runs (:func:`combined_summary`); other groups get a
    t-interval over the runs. Intervals are cut to the metric's range."""
    lookup = {}
    if single is not None and not single.empty:
        lookup = {
            tuple(k[:-3]): k[-3:]
            for k in single[SINGLE_RUN_KEY + ["ci_low", "ci_high", "method"]].itertuples(index=False)
        }
    z = float(scipy_stats.norm.ppf((1 + level) / 2))
    records = []
    for keys, group in rows.groupby(by, sort=True, dropna=False):
        metrics = group["metric"].unique() if "metric" in group else []
        metric = metrics[0] if len(metrics) == 1 else ""
        s = t_summary(group["value"].tolist(), level, metric)
        found = (
            [lookup.get(tuple(k)) for k in group[SINGLE_RUN_KEY].itertuples(index=False)]
            if lookup and set(SINGLE_RUN_KEY) <= set(group.columns)
            else [None]
        )
        if s.n == 1 and found[0] is not None:
            s = Summary(s.mean, s.sd, 1, *found[0])
        elif s.n > 1 and all(f is not None and not pd.isna(f[0]) for f in found):
            s = combined_summary(group["value"].tolist(), [(f[1] - f[0]) / (2 * z) for f in found], level, metric)
        records.append({**dict(zip(by, keys if isinstance(keys, tuple) else (keys,))), **vars(s)})
    return pd.DataFrame(records, columns=by + ["mean", "sd", "n", "ci_low", "ci_high", "method"])


def target_gap(frame: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, arch, defense, seed): train_accuracy, test_accuracy and gap = train - test."""
    rows = ok_rows(frame)
    rows = rows[
        (rows["attack"] == "target") & rows["metric"].isin(["train_accuracy", "test_accuracy", "n_train", "n_test"])
    ]
    if rows.empty:
        return pd.DataFrame(columns=CELL + ["seed", "train_accuracy", "test_accuracy", "gap"])
    wide = rows.pivot_table(index=CELL + ["seed"], columns="metric", values="value", aggfunc="mean").reset_index()
    wide.columns.name = None
    if not {"train_accuracy", "test_accuracy"} <= set(wide.columns):
        return pd.DataFrame(columns=CELL + ["seed", "train_accuracy", "test_accuracy", "gap"])
    wide["gap"] = wide["train_accuracy"] - wide["test_accuracy"]
    return wide


def series_label(attack: str, threat_model: str, variant: str = "", metric: str = "") -> str:
    """A short name for one attack series, e.g. ``membership (B,S)`` or ``membership_metric (B,S) entropy``."""
    parts = [attack, short_name(threat_model)] + ([variant] if variant else []) + ([metric] if metric else [])
    return " ".join(parts)


def cell_matrix(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows: (dataset, arch, defense) cells; columns: every attack series' main metric, mean over seeds."""
    pieces = []
    for (_, metric), rows in main_metric_rows(frame).items():
        rows = rows.assign(
            series=[
                series_label(a, t, v, metric) for a, t, v in zip(rows["attack"], rows["threat_model"], rows["variant"])
            ]
        )
        pieces.append(rows)
    if not pieces:
        return pd.DataFrame()
    rows = pd.concat(pieces)
    matrix = rows.pivot_table(index=CELL, columns="series", values="value", aggfunc="mean")
    matrix.columns.name = None
    return matrix


def pearson_matrix(matrix: pd.DataFrame, min_cells: int = 3) -> tuple[pd.DataFrame, list[str]]:
    """Pearson r between the columns of ``matrix`` over its rows (pairwise complete, at least
    ``min_cells`` rows per pair). Columns that are constant or have fewer than ``min_cells`` values
    are dropped and returned by name, since r is undefined for them."""
    dropped = [c for c in matrix.columns if matrix[c].notna().sum() < min_cells or matrix[c].nunique(dropna=True) < 2]
    kept = matrix.drop(columns=dropped)
    return kept.corr(method="pearson", min_periods=min_cells), dropped


def low_fpr_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """``tpr_at_fpr_<x>`` rows with their run's ``n_nonmembers`` and a ``too_few`` flag."""
    rows = attack_rows(frame)
    key = ["dataset", "arch", "defense", "attack", "threat_model", "variant", "seed", "config_hash"]
    tpr = rows[rows["metric"].str.startswith(LOW_FPR_PREFIX)]
    neg = rows.loc[rows["metric"] == "n_nonmembers", key + ["value"]].rename(columns={"value": "n_nonmembers"})
    merged = tpr.merge(neg, on=key, how="left")
    merged["too_few"] = [too_few_negatives(m, n) for m, n in zip(merged["metric"], merged["n_nonmembers"])]
    return merged


def audit_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """One line per privacy-audit run (cell, variant, seed, config): the accountant's ``epsilon`` (NaN
    without DP), the audited ``epsilon_lower_bound`` (Steinke et al.) and ``fdp_epsilon_lower_bound``
    (Mahloujifar et al.'s Gaussian-DP analysis), the guesses behind each, and ``sound``: whether both
    bounds stay at or below the accountant's epsilon (NaN where there is none to compare with).
    Runs of different configurations (e.g. canary kinds) stay apart: a bound is never averaged."""
    rows = attack_rows(frame)
    rows = rows[(rows["family"] == "privacy_audit") & rows["metric"].isin(AUDIT_METRICS)]
    index = CELL + ["variant", "seed", "config_hash"]
    if rows.empty:
        return pd.DataFrame(columns=index + list(AUDIT_METRICS) + ["sound"])
    wide = rows.pivot_table(index=index, columns="metric", values="value", aggfunc="mean").reset_index()
    wide.columns.name = None
    for metric in AUDIT_METRICS:
        if metric not in wide.columns:
            wide[metric] = math.nan
    highest = wide[["epsilon_lower_bound", "fdp_epsilon_lower_bound"]].max(axis=1)  # either bound must hold
    wide["sound"] = np.where(wide["epsilon"].isna(), math.nan, (highest <= wide["epsilon"]).astype(float))
    return wide[index + list(AUDIT_METRICS) + ["sound"]]


def membership_ranking(frame: pd.DataFrame) -> pd.DataFrame:
    """The membership series (attack, threat model, variant) of ``frame``'s ok rows, strongest first:
    by :data:`STRENGTH` (TPR at 1% FPR, ties by AUC; a missing value ranks last), means over seeds.
    ``privacy_audit`` scores canaries, not members, and is left out."""
    rows = ok_rows(frame)
    rows = rows[(families(rows) == "membership") & rows["metric"].isin(STRENGTH)]
    if rows.empty:
        return pd.DataFrame(columns=SERIES + list(STRENGTH))
    wide = rows.pivot_table(index=SERIES, columns="metric", values="value", aggfunc="mean").reset_index()
    wide.columns.name = None
    for metric in STRENGTH:
        if metric not in wide.columns:
            wide[metric] = math.nan
    wide = wide[SERIES + list(STRENGTH)].sort_values(list(STRENGTH), ascending=False, kind="stable", na_position="last")
    return wide.reset_index(drop=True)
