"""Log output (no terminal): progress as plain lines, and a summary with full headers."""

import io

import pandas as pd
from rich.console import Console

from mldoctor_bench.ui import LineBars, plain_summary


def log_console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, soft_wrap=True, no_color=True, width=10_000), out


def test_line_progress_says_start_done_and_stopped_early():
    console, out = log_console()
    bars = LineBars(console, every=3600)
    finished, stopped = bars("train target", 2), bars("MIFace (W,N)", 600)
    finished(1)
    finished(1, "loss 0.1")
    stopped(586)
    bars.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == "train target: started (2)" and lines[1] == "MIFace (W,N): started (600)"
    assert lines[2].startswith("train target: 2/2 ") and lines[2].endswith("done loss 0.1")
    assert lines[3].startswith("MIFace (W,N): 586/600 ") and "stopped early" in lines[3]
    assert len(lines) == 4  # nothing between start and end: the update interval never passed


def test_plain_summary_keeps_every_header_and_lists_failures_first():
    rows = [("target", "none", "", "test_accuracy", 0.9, "ok", ""),
            ("membership", "blackbox_shadow", "", "tpr_at_fpr_0.001", 0.002, "ok", ""),
            ("membership", "blackbox_shadow", "", "tpr_at_fpr_0.01", 0.03, "ok", ""),
            ("stealing", "blackbox_partial", "", "", float("nan"), "failed", "RuntimeError: boom")]
    frame = pd.DataFrame(rows, columns=["attack", "threat_model", "variant", "metric", "value", "status", "reason"])
    text = plain_summary(frame, "cell", ("test_accuracy", "tpr_at_fpr_0.001", "tpr_at_fpr_0.01"))
    lines = text.splitlines()
    assert lines[0] == "cell" and "TPR@0.1%" in lines[1] and "TPR@1%" in lines[1]
    assert lines[2].startswith("stealing") and "RuntimeError: boom" in lines[2]
