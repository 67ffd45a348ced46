"""The membership risk statement of an owner's report, from ``verdicts.json``: per judged series, at
the threshold that flags 1% (0.1%) of the evaluation non-members, how many of the model's training
examples it flags, how many a model that leaks nothing would flag, and how often a "member" call is
right (:mod:`.cell_verdicts` computes them). Each number says which test it rests on, and where no
non-member is flagged the rates are given from the upper end of the false-positive rate's interval,
never as 0% and 100%."""

from __future__ import annotations

from mldoctor_bench.report.verdicts import NOT_JUDGED


def _share(value: float, at_bound: bool = False) -> str:
    """A share in percent; ``at_least`` where it rests on the upper bound of the false-positive rate."""
    return "n/a" if value != value else f"{'at least ' if at_bound else ''}{value:.0%}"


def _observed_fpr(r: dict) -> str:
    """The observed false-positive rate, with its interval's upper end where it is 0."""
    if r.get("fpr_at_bound"):
        return f"0 observed, at most {r['fpr_interval'][1]:.1%} by its 95% interval"
    return f"{r['observed_fpr']:.1%}"


def lead_lines(lead: "dict | None", verdict: dict) -> list[str]:
    """The verdict's own series' risk statement in words (nothing without a training-set size). The
    statement reads the series at one false-positive rate, with its own test (of the TPR there); the
    verdict may rest on another statistic of the series (its AUC), which it then says."""
    if lead is None or "training_examples" not in lead:
        return []
    low, high = lead["training_examples_flagged_interval"]
    share, rare = lead["precision"][0], lead["precision"][-1]
    bound = lead.get("fpr_at_bound", False)
    chance = f"about {lead['flagged_without_leakage']:.0f}"
    tested = f"TPR at {lead['fpr']:.1%} FPR"
    other = verdict.get("statistic") not in (None, "", f"tpr_at_fpr_{lead['fpr']:g}")
    if lead["rejects_no_leakage"]:
        judged = f" Its {tested} rejects no leakage (exact negative hypergeometric test, Holm-corrected)."
    else:
        judged = (
            f" Its {tested} does not reject no leakage (exact negative hypergeometric test, Holm-corrected), so "
            "at this threshold these calls are no better than chance"
            + (
                f"; the verdict rests on another of its statistics ({verdict['statistic']}), which reads every "
                "threshold at once."
                if other
                else "."
            )
        )
    return [
        f"At the threshold that wrongly flags {lead['false_positives']} of {lead['nonmembers']} non-members "
        f"({_observed_fpr(lead)}), {lead['series']} flags {lead['members_flagged']} of the "
        f"{lead['members_scored']} evaluation members: about {lead['training_examples_flagged']:.0f} of the "
        f"model's {lead['training_examples']} training examples (95% interval {low:.0f} to {high:.0f}), where "
        f"a model that leaks nothing would have {chance} flagged by chance. "
        f'A "member" call is right {_share(share["value"], bound)} of the time when {share["prior"]:.0%} of '
        f"those tested are members, and {_share(rare['value'], bound)} when {rare['prior']:.0%} are.{judged}",
        "",
    ]


def risk_lines(data: dict) -> list[str]:
    """The membership risk statement of ``verdicts.json``: per judged series, at the threshold that
    flags 1% (0.1%) of the evaluation non-members, how many training examples it flags and how often
    a "member" call is right; the verdict's own series in words first."""
    statements = data.get("membership_risk") or []
    verdict = data.get("families", {}).get("membership", {})
    if not statements:
        if not verdict:
            return []
        if verdict.get("level") == NOT_JUDGED:
            return ["## Membership risk", "", "No risk statement: membership is not judged (see the verdicts).", ""]
        return [
            "## Membership risk",
            "",
            "No risk statement: no membership series was judged at a fixed false-positive rate, which needs "
            "at least 1/FPR evaluation non-members (100 at 1% FPR) with saved scores.",
            "",
        ]
    lines = [
        "## Membership risk",
        "",
        *lead_lines(next((r for r in statements if r["series"] == verdict.get("series")), None), verdict),
    ]
    lines += [
        "| series | FPR | flagged members | of the training set (95% interval) | by chance | "
        "precision at the run's share | at 1% members | its TPR rejects no leakage |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in statements:
        total = (
            f"{r['training_examples_flagged']:.0f} [{r['training_examples_flagged_interval'][0]:.0f}, "
            f"{r['training_examples_flagged_interval'][1]:.0f}]"
            if "training_examples" in r
            else ""
        )
        bound = r.get("fpr_at_bound", False)
        chance = f"{r['flagged_without_leakage']:.0f}" if "training_examples" in r else ""
        lines.append(
            f"| {r['series']} | {r['fpr']:.1%} | {r['members_flagged']} / {r['members_scored']} | {total} | "
            f"{chance} | {_share(r['precision'][0]['value'], bound)} | {_share(r['precision'][-1]['value'], bound)} | "
            f"{'yes' if r['rejects_no_leakage'] else 'no'} |"
        )
    lines += [
        "",
        '"By chance": the training examples a model that leaks nothing would have flagged at this threshold '
        "rule, the null floor of the verdict's test, (floor(FPR x non-members) + 1) / (non-members + 1) of them. "
        "Where a series flags no non-member, its false-positive rate is not 0 but unknown below the upper end of "
        'its 95% interval: the precision then uses that end, and is a lower bound ("at least").',
        "",
        f"The statement in words is that of the series the verdict rests on, the strongest of the {len(statements)} "
        "judged at a fixed false-positive rate, chosen after seeing them: its numbers are the most favourable to "
        "the attacker, biased upward as a maximum is; the table gives every series.",
        "",
        f"The flagged training examples of every series are listed in `{data.get('exposed', 'exposed.csv')}` "
        "beside the report's cell (dataset index, and file name for an image folder).",
        "",
    ]
    return lines
