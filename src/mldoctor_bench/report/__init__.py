"""``mldoctor-report``: tables and figures from a results directory or a merged results table."""

from mldoctor_bench.report.build import build_report, main
from mldoctor_bench.report.collect import collect_table, locate

__all__ = ["build_report", "collect_table", "locate", "main"]
