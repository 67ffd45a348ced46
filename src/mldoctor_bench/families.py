"""The attack families: what an attack infers. Every attack declares one (``Attack.family``), every
results row carries it, and the reports group, chart and judge by it: the verdicts judge the first
four (:data:`mldoctor_bench.report.verdicts.JUDGES`), the audit reports its epsilon bound and the
worst-case evaluation the canaries' TPR."""

MEMBERSHIP, INVERSION, ATTRIBUTE, STEALING, PRIVACY_AUDIT, WORST_CASE = (
    "membership",
    "inversion",
    "attribute",
    "stealing",
    "privacy_audit",
    "worst_case",  # membership of the most exposed examples: a defense's canary evaluation
)
FAMILIES = (MEMBERSHIP, INVERSION, ATTRIBUTE, STEALING, PRIVACY_AUDIT, WORST_CASE)
