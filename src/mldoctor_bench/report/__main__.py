"""``python -m mldoctor_bench.report``: the same as the ``mldoctor-report`` command."""

from mldoctor_bench.report.build import main

main()
