"""Phase timings: nested phases, time of their own, and what the summary line names."""

import json
import time

from mldoctor_bench.timings import ATTACK, MODEL, Timings


def test_nested_phases_count_their_own_time_once(tmp_path):
    t = Timings()
    with t.phase("attack stealing (B,S)", ATTACK):
        time.sleep(0.02)
        with t.phase("train surrogate", MODEL) as inner:
            time.sleep(0.05)
            inner.info["images_per_second"] = 10.0
    with t.phase("attack membership (B,S)", ATTACK):
        time.sleep(0.01)
    outer, inner, other = t.phases
    assert inner.parent == 0 and outer.parent is None and other.parent is None
    assert outer.seconds >= inner.seconds + 0.02 - 1e-3
    assert abs(outer.self_s - (outer.seconds - inner.seconds)) < 2e-3
    assert [p.name for p in t.largest(2)] == ["train surrogate", "attack stealing (B,S)"]
    assert t.headline(2).startswith("time: ") and "train surrogate" in t.headline(2)
    t.write(tmp_path / "timings.json")
    saved = json.loads((tmp_path / "timings.json").read_text())
    assert [p["name"] for p in saved["phases"]] == [p.name for p in t.phases]
    assert saved["phases"][1]["info"] == {"images_per_second": 10.0}
    assert saved["total_s"] >= sum(p["self_s"] for p in saved["phases"])


def test_a_phase_that_raises_is_still_timed():
    t = Timings()
    try:
        with t.phase("attack broken", ATTACK):
            time.sleep(0.01)
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert t.phases[0].seconds > 0 and t._open == []
