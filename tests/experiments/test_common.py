"""What every study shares (``seednorm_experiments.common``): norm names, baselines, final loss, machine line."""

from __future__ import annotations

from pathlib import Path

import pytest

import seednorm
from seednorm_experiments import common
from seednorm_experiments.lm.ablation import MAIN
from seednorm_experiments.vit.presets import PRESETS as VIT_PRESETS


def test_norm_names_come_from_the_library_and_each_study_leads_with_its_baseline() -> None:
    assert tuple(seednorm.NORMS) == common.NORM_NAMES
    assert common.default_norms(common.BASELINE)[0] == "rmsnorm"
    assert sorted(common.default_norms(common.BASELINE)) == sorted(common.STUDY_NORMS)
    assert common.STUDY_NORMS == common.NORM_NAMES  # every norm of the library, Derf included, in its order
    # the ablation's main norms: the studies' norms but Derf (opt-in there, with --norms)
    assert tuple(n for n in common.default_norms(common.BASELINE) if n != "derf") == MAIN
    assert common.check_norms(["derf", "rmsnorm"]) == ["derf", "rmsnorm"]
    assert all(p.norms == common.default_norms(common.VISION_BASELINE) for p in VIT_PRESETS.values())
    assert VIT_PRESETS["smoke"].norms[0] == "layernorm"


def test_check_norms_drops_repeats_and_names_the_unknown() -> None:
    assert common.check_norms(["seednorm", "dyt", "seednorm"]) == ["seednorm", "dyt"]
    with pytest.raises(ValueError, match=r"unknown norm\(s\) \['batchnorm'\]; choose from rmsnorm"):
        common.check_norms(["dyt", "batchnorm"])
    with pytest.raises(ValueError, match="unknown norm"):
        common.check_norms([])


def test_final_loss_is_the_mean_of_the_last_tenth_of_steps() -> None:
    history = [{"loss": float(i)} for i in range(20)]
    assert common.final_loss(history) == 18.5  # steps 18 and 19
    assert common.final_loss(history[:5]) == 4.0  # at least one step


def test_machine_line_and_default_out() -> None:
    line = common.machine()
    assert "\n" not in line and " cores, " in line and "torch " in line and "triton " in line
    assert common.default_out("vit", "quick") == Path("runs") / "vit_quick"
