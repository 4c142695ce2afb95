"""Study report helpers: statistics against closed forms, tables, and that plots are written."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from seednorm_experiments.report import (
    markdown_table,
    paired_diff,
    plot_bars,
    plot_curves,
    plot_lines,
    step_cost_document,
    step_cost_rows,
    summarize,
)


def test_summarize_matches_t_interval() -> None:
    s = summarize([1.0, 2.0, 3.0])
    assert (s.mean, s.std, s.n) == (2.0, 1.0, 3)
    assert s.ci95 == pytest.approx(4.302652729911275 / math.sqrt(3))  # t_{0.975, 2}
    assert str(s) == "2.000 ± 1.000"
    assert summarize([5.0]).format() == "5.000" and math.isnan(summarize([5.0]).std)
    with pytest.raises(ValueError, match="at least one"):
        summarize([])


def test_paired_diff_uses_common_seeds() -> None:
    d = paired_diff({0: 3.0, 1: 5.0, 2: 9.0}, {0: 1.0, 1: 2.0})
    assert d.mean == pytest.approx(2.5) and d.n == 2
    assert d.format(2, ci=True).startswith("+2.50 [")
    with pytest.raises(ValueError, match="share no seed"):
        paired_diff({0: 1.0}, {1: 1.0})


def test_markdown_table() -> None:
    assert markdown_table(["a", "b"], [["1", "2"]]) == "| a | b |\n|---|---|\n| 1 | 2 |"


def test_plots_are_written(tmp_path: Path) -> None:
    plot_curves({"a": [[3, 2, 1], [3, 2.5, 1.5]], "b": [[3, 2]]}, [0, 1, 2], tmp_path / "c.png",
                ylabel="loss", smooth=0.5)
    groups = {"x": {"a": [1.0, 1.1], "b": [1.2, 1.3]}, "y": {"a": [2.0, 2.1], "b": [1.9, 2.0]}}
    plot_bars(groups, tmp_path / "b.png", ylabel="bpb")
    plot_bars(groups, tmp_path / "d.png", ylabel="bpb", baseline="a")
    plot_lines([1e-3, 1e-2], {"a": [0.0, 0.5]}, tmp_path / "l.png", xlabel="lr", ylabel="diverged", logx=True)
    for name in ("c", "b", "d", "l"):
        assert (tmp_path / f"{name}.png").read_bytes()[:4] == b"\x89PNG"


def test_step_cost_rows_and_document() -> None:
    """Best and median throughput, and the cost as ratios of best rounds, median rounds and per-round ratios."""
    speeds = {"layernorm": [100.0, 80.0, 60.0], "seednorm": [50.0, 80.0, 30.0]}
    rows = step_cost_rows(speeds, "layernorm", ["quick", "64"])
    assert rows == [
        ["quick", "64", "layernorm", "100", "80", "1.000", "1.000", "1.000"],
        # best 100/80; medians 80/50; per-round ratios 2, 1, 2 → median 2
        ["quick", "64", "seednorm", "80", "50", "1.250", "1.600", "2.000"],
    ]
    text = step_cost_document("T", ["preset", "width"], rows, machine="M", date="D", command="cmd --x ",
                              rounds=3, steps=2, warmup=3, baseline="LayerNorm", unit="images/s", note="n")
    assert text.splitlines()[:8] == [
        "# T", "", "- Machine: M", "- Date: D", "- Command: `cmd --x`",
        "- Timing: the study's training step, round-robin, 3 rounds × 2 steps per norm after 3 warm-up steps; cost = "
        "LayerNorm's images/s ÷ the norm's (best rounds, median rounds, median of per-round ratios)",
        "- Note: n", "",
    ]
    assert text.splitlines()[8] == ("| preset | width | norm | best images/s | median images/s | cost (best) | "
                                    "cost (median) | cost (paired median) |")
    assert text.splitlines()[-1] == "| quick | 64 | seednorm | 80 | 50 | 1.250 | 1.600 | 2.000 |"


def test_plot_titles_name_their_intervals_only_where_there_are_two_seeds() -> None:
    from seednorm_experiments.report import interval_note

    assert interval_note([4, 4]) == "mean of 4 seeds, 95% CI"
    assert interval_note([2, 4]) == "mean of 2-4 seeds, 95% CI"
    assert interval_note([1, 1]) == "1 seed, no interval"
    assert interval_note([1, 3]) == "1-3 seeds, 95% CI where there are 2 or more"
    assert interval_note([3], "paired seeds") == "mean of 3 paired seeds, 95% CI"


def test_bars_start_at_zero_with_an_honest_title_and_the_legend_outside(tmp_path, monkeypatch) -> None:
    from seednorm_experiments import report

    made = []

    def figure(*args, **kwargs):
        fig, ax = real(*args, **kwargs)
        made.append(ax)
        return fig, ax

    real = report.figure
    monkeypatch.setattr(report, "figure", figure)
    report.plot_bars({"bible": {"rmsnorm": [4.5], "seednorm": [4.6]}}, tmp_path / "one.png", ylabel="bpb",
                     title="Bits per byte")
    report.plot_bars({"bible": {"rmsnorm": [4.5, 4.4], "seednorm": [4.6, 4.5]}}, tmp_path / "two.png",
                     ylabel="bpb", title="Bits per byte")
    one, two = made
    assert one.get_title(loc="left") == "Bits per byte\n(1 seed, no interval)"
    assert two.get_title(loc="left") == "Bits per byte\n(mean of 2 seeds, 95% CI)"
    assert one.get_ylim()[0] == 0 and two.get_ylim()[0] == 0 and two.get_ylim()[1] >= 4.6
    legend = two.get_legend()
    assert legend.get_bbox_to_anchor().x0 > two.get_window_extent().x1 - 1  # right of the axes, over no bar
