"""Log output (no terminal): progress as plain lines, and a summary with full headers."""

import io

import pandas as pd
from rich.console import Console

from mldoctor_bench.ui import LineBars, summary_lines


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


def test_the_summary_fits_100_columns_with_only_the_columns_each_family_has():
    rows = [
        ("target", "none", "", "test_accuracy", 0.9, "ok", ""),
        ("membership", "blackbox_shadow", "", "auc", 0.5974, "ok", ""),
        ("membership", "blackbox_shadow", "", "tpr_at_fpr_0.001", 0.002, "ok", ""),
        ("membership", "blackbox_shadow", "", "tpr_at_fpr_0.01", 0.03, "ok", ""),
        ("membership", "blackbox_shadow", "", "n_nonmembers", 500, "ok", ""),
        ("membership_label_only", "blackbox_label_only", "noise_robustness", "auc", 0.503, "ok", ""),
        ("stealing", "blackbox_shadow", "posteriors", "agreement", 0.966, "ok", ""),
        ("stealing", "blackbox_partial", "", "", float("nan"), "failed", "RuntimeError: boom"),
        ("inversion", "blackbox_shadow", "", "", float("nan"), "skipped", "inversion does not support it"),
    ]
    frame = pd.DataFrame(rows, columns=["attack", "threat_model", "variant", "metric", "value", "status", "reason"])
    lines = summary_lines(frame, "cell", ["membership moderate"])
    assert lines[0] == "cell" and max(len(line) for line in lines) <= 100
    block = lines[lines.index(next(line for line in lines if line.startswith("membership "))) :]
    header = block[0].split()
    assert header == ["membership", "AUC", "TPR@1%", "TPR@0.1%"]  # no empty adv or acc column
    assert block[1].split() == ["membership", "(B,S)", "0.597", "0.030", "0.002*"]  # 500 < 1/0.001
    assert "membership_label_only (B-label,S) noise_robustness" in block[2] and block[2].endswith("0.503")
    assert any(line.split() == ["stealing", "(B,S)", "posteriors", "0.966"] for line in lines)
    assert "failed: stealing (B,P): RuntimeError: boom" in lines
    assert "1 attack x threat-model pairs the attack does not support: skipped rows" in lines
    assert lines[-1] == "verdicts: membership moderate"
