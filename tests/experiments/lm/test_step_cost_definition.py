"""The step cost the reports write is what their definition says: this norm's time ÷ RMSNorm's (above 1: slower)."""

from __future__ import annotations

from pathlib import Path

from seednorm_experiments.lm.data import EVAL_DOMAINS
from seednorm_experiments.lm.presets import get_preset
from seednorm_experiments.lm.report import write_report
from seednorm_experiments.lm.study import Run
from seednorm_experiments.report import step_cost_document, step_cost_rows


def _run(norm: str, seed: int) -> Run:
    history = [{"loss": 5.0 - 0.1 * step, "grad_norm": 1.0} for step in range(12)]
    final_eval = {f"{kind}/{d}": 0.5 for d in EVAL_DOMAINS for kind in ("bpb", "cloze")}
    return Run(norm, seed, 1e-3, {"history": history, "final_eval": final_eval, "diverged": False,
                                  "num_params": 1000, "tokens_per_s": 100.0, "clip_fraction": 0.0})


def test_lm_report_step_cost_is_this_norms_time_over_rmsnorms(tmp_path: Path) -> None:
    """A benchmark where SeeDNorm's step takes twice RMSNorm's (half the tokens/s in every round): the report's
    step cost is 2.000 and its definition says the norm's time ÷ RMSNorm's, above 1 slower."""
    runs = [_run(norm, seed) for norm in ("rmsnorm", "seednorm") for seed in (0, 1)]
    bench = {"rmsnorm": [100.0, 90.0, 110.0], "seednorm": [50.0, 45.0, 55.0]}
    text = write_report(tmp_path, get_preset("smoke"), runs, command="seednorm lm", throughput=bench).read_text()
    assert "Step cost = this norm's time ÷ RMSNorm's in the same round (above 1: slower)" in text
    assert "RMSNorm's time ÷ this norm's" not in text
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert rows["seednorm"].rstrip(" |").endswith("2.000 (2.000–2.000)")
    assert rows["rmsnorm"].rstrip(" |").endswith("1.000 (1.000–1.000)")


def test_benchmark_table_cost_is_this_norms_time_over_the_baselines() -> None:
    """The step-cost tables of ``lm.step_cost`` / ``vit.step_cost``: SeeDNorm twice as slow costs 2.000 in every
    column, and the definition is the baseline's throughput ÷ the norm's (the norm's time ÷ the baseline's)."""
    rows = step_cost_rows({"rmsnorm": [100.0, 90.0, 110.0], "seednorm": [50.0, 45.0, 55.0]}, "rmsnorm", ["quick"])
    assert rows[1][-3:] == ["2.000", "2.000", "2.000"]
    text = step_cost_document("T", ["preset"], rows, machine="M", date="D", command="c", rounds=3, steps=2,
                              warmup=3, baseline="RMSNorm", unit="tokens/s")
    assert "cost = RMSNorm's tokens/s ÷ the norm's" in text
