"""The attack families: what an attack infers. Every attack declares one (``Attack.family``), every
results row carries it, and the reports group, chart and judge by it: the verdicts judge the first
four (:data:`mldoctor_bench.report.verdicts.JUDGES`), the audit reports its epsilon bound."""

MEMBERSHIP, INVERSION, ATTRIBUTE, STEALING, PRIVACY_AUDIT = (
    "membership",
    "inversion",
    "attribute",
    "stealing",
    "privacy_audit",
)
FAMILIES = (MEMBERSHIP, INVERSION, ATTRIBUTE, STEALING, PRIVACY_AUDIT)
