"""``seednorm upcycle --preset smoke`` end to end (one layer of a 96-wide random model of SmolLM2-135M's architecture
and tokenizer, so that it takes seconds): the grid, the learning-rate choice, the paired statistics against hand
computations from the runs' own records, reuse, and exit codes."""

from __future__ import annotations

import json
import math

import pytest

from seednorm_experiments import cli
from seednorm_experiments.common import final_loss
from seednorm_experiments.upcycle.report import summary
from seednorm_experiments.upcycle.study import Run, best_lr

ARMS = ["rmsnorm-norms", "seednorm-norms"]  # the cheapest pair: norm-only, compared seed by seed
D, KV, HIDDEN = 96, 32, 256  # the smoke model: width, key/value width (1 head of 32), MLP width (8/3 × 96)
NORMS_1 = 3 * D  # the 1-layer model's norms: two in the layer, the final one
PARAMS_1 = 49152 * D + 2 * D * D + 2 * D * KV + 3 * D * HIDDEN + NORMS_1


def test_best_lr_is_the_lowest_final_loss_and_a_diverged_run_never_wins() -> None:
    def run(lr: float, loss: float, diverged: bool = False, seed: int = 0) -> Run:
        return Run("a", seed, lr, {"diverged": diverged, "history": [{"loss": loss}] * 10})

    assert best_lr([run(1e-4, 3.0), run(3e-4, 2.5), run(3e-4, 0.1, seed=1)]) == 3e-4
    assert best_lr([run(1e-4, 3.0), run(3e-4, 0.5, diverged=True)]) == 1e-4
    assert best_lr([run(3e-4, 2.0), run(1e-4, 2.0)]) == 1e-4  # the smaller rate on a tie


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("upcycle") / "smoke"
    argv = ["upcycle", "--preset", "smoke", "--arms", *ARMS, "--out", str(out), "--no-progress"]
    assert cli.main(argv) == 0
    return out, argv


def _results(out):
    found = {}
    for path in sorted(out.glob("runs/*/lr*/seed*/result.json")):
        arm, lr, seed = path.parts[-4], float(path.parts[-3][2:]), int(path.parts[-2][4:])
        found[arm, lr, seed] = json.loads(path.read_text())
    return found


def test_a_seed_that_diverged_at_the_chosen_rate_is_named_not_silently_dropped() -> None:
    keys = [f"{m}/{d}" for d in ("bible", "plays", "code") for m in ("bpb", "cloze")]

    def run(arm: str, seed: int, bpb: float | None) -> Run:
        evals = {k: bpb if k.startswith("bpb") else 0.5 for k in keys} if bpb is not None else {}
        return Run(arm, seed, 1e-3, {"diverged": bpb is None, "history": [{"loss": 3.0}] * 10,
                                     "final_eval": evals, "tokens_per_s": 100.0})

    runs = [run("rmsnorm-norms", s, 1.0 + 0.01 * s) for s in range(3)]
    runs += [run("seednorm-norms", 0, 5.0), run("seednorm-norms", 1, None), run("seednorm-norms", 2, 6.0)]
    s = summary({"eval": dict.fromkeys(keys, 1.2), "arms": {}}, runs, "bible")
    assert s["arms"]["seednorm-norms"]["seeds"] == [0, 2] and s["arms"]["seednorm-norms"]["diverged_seeds"] == [1]
    assert "diverged_seeds" not in s["arms"]["rmsnorm-norms"]  # the key only where a seed was lost
    assert s["arms"]["seednorm-norms"]["paired"]["bpb/bible"]["n"] == 2  # paired over the seeds both arms finished


@pytest.mark.slow
def test_smoke_study_grid_choice_and_paired_statistics(smoke) -> None:
    out, _ = smoke
    results = _results(out)
    base = json.loads((out / "base.json").read_text())
    summary = json.loads((out / "summary.json").read_text())
    assert (out / "report.md").is_file() and (out / "forgetting.png").is_file()
    assert not list(out.glob("runs/**/checkpoint.pt"))  # finished runs keep result.json only
    # The grid: each arm at base lr × (1, 3) on seed 0, then seed 1 at the rate with the lower final loss.
    chosen = {}
    for arm in ARMS:
        sweep = {lr: final_loss(results[arm, lr, 0]["history"]) for lr in (3e-3, 9e-3)}
        chosen[arm] = min(sweep, key=sweep.get)
        assert summary["arms"][arm]["lr"] == chosen[arm]
        assert (arm, chosen[arm], 1) in results
    assert len(results) == 6
    arms = base["arms"]
    assert arms["seednorm-norms"]["gap"] <= 1e-4 and arms["rmsnorm-norms"]["gap"] == 0  # |Δ logit|
    assert arms["rmsnorm-norms"]["trainable"] == NORMS_1 and arms["seednorm-norms"]["trainable"] == 3 * NORMS_1
    mem = arms["rmsnorm-norms"]["memory"]
    assert mem["weights"] == 4 * PARAMS_1 and mem["grads"] == 4 * NORMS_1 and mem["adam"] == 2 * mem["grads"]
    assert mem["activations"] > 0
    # Change against the base model and the paired difference to the reference, by hand from the final evaluations.
    key = "bpb/bible"
    after = {arm: [results[arm, chosen[arm], s]["final_eval"][key] for s in (0, 1)] for arm in ARMS}
    deltas = [a - base["eval"][key] for a in after["seednorm-norms"]]
    change = summary["arms"]["seednorm-norms"]["change"][key]
    assert change["n"] == 2 and change["mean"] == pytest.approx(sum(deltas) / 2, abs=1e-12)
    assert change["std"] == pytest.approx(abs(deltas[0] - deltas[1]) / math.sqrt(2), abs=1e-12)
    assert change["ci95"] == pytest.approx(12.706204736 * change["std"] / math.sqrt(2), rel=1e-8)  # t(0.975, 1)
    pairs = [a - b for a, b in zip(after["seednorm-norms"], after["rmsnorm-norms"], strict=True)]
    paired = summary["arms"]["seednorm-norms"]["paired"][key]
    assert summary["arms"]["seednorm-norms"]["vs"] == "rmsnorm-norms"
    assert paired["mean"] == pytest.approx(sum(pairs) / 2, abs=1e-12)
    assert paired["std"] == pytest.approx(abs(pairs[0] - pairs[1]) / math.sqrt(2), abs=1e-12)


@pytest.mark.slow
def test_a_rerun_reuses_every_run_and_other_settings_stop_it(smoke, capsys) -> None:
    out, argv = smoke
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/lr*/seed*/result.json")}
    capsys.readouterr()
    assert cli.main(argv) == 0
    assert capsys.readouterr().out.strip().endswith("(0 runs trained now, 6 reused (6 from the records))")
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/*/lr*/seed*/result.json")} == stamps
    summary = (out / "summary.json").read_text()
    assert cli.main([*argv, "--report-only"]) == 0  # the runs found on disk, verified: the same numbers
    assert (out / "summary.json").read_text() == summary
    capsys.readouterr()
    assert cli.main([*argv, "--steps", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("seednorm upcycle: error:") and "steps: 3 -> 2" in err


def test_bad_arguments_exit_2(tmp_path, capsys) -> None:
    assert cli.main(["upcycle", "--preset", "smoke", "--arms", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown arm 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        cli.main(["upcycle", "--steps", "0"])
    assert e.value.code == 2
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit) as e:
        cli.main(["upcycle", "--out", str(tmp_path / "file")])
    assert e.value.code == 2


def test_a_sweep_whose_best_rate_is_on_an_edge_grows_there(tmp_path, monkeypatch) -> None:
    """With ``extend`` = 1 each arm's two-rate sweep (base × 1, × 3) gets one more rate on the side of its best
    (÷ 3 below, × 3 above); the seeds after it run at the best of the three, and the report marks a best rate that
    is still the lowest or highest run "(edge)"."""
    import dataclasses

    from seednorm_experiments.upcycle import presets

    monkeypatch.setitem(presets.PRESETS, "smoke", dataclasses.replace(presets.PRESETS["smoke"], extend=1))
    out = tmp_path / "grown"
    assert cli.main(["upcycle", "--preset", "smoke", "--arms", *ARMS, "--out", str(out), "--no-progress"]) == 0
    results = _results(out)
    report = (out / "report.md").read_text()
    sweep_table = report[report.index("## Learning-rate sweep"):]
    for arm in ARMS:
        first = {lr: final_loss(results[arm, lr, 0]["history"]) for lr in (3e-3, 9e-3)}
        grown = 1e-3 if min(first, key=first.get) == 3e-3 else 2.7e-2
        sweep = {lr for a, lr, seed in results if a == arm and seed == 0}
        assert sweep == {3e-3, 9e-3, grown}
        losses = {lr: final_loss(results[arm, lr, 0]["history"]) for lr in sweep}
        best = min(sorted(losses), key=losses.get)
        assert {lr for a, lr, seed in results if a == arm and seed == 1} == {best}
        row = next(line for line in sweep_table.splitlines() if line.startswith(f"| {arm} |"))
        assert ("← (edge)" in row) == (best in (min(sweep), max(sweep)))


def test_the_base_record_is_measured_by_one_process_and_read_by_the_others(smoke, tmp_path, monkeypatch) -> None:
    import contextlib
    import shutil

    from seednorm_experiments import claims
    from seednorm_experiments.upcycle import study as study_module
    from seednorm_experiments.upcycle.presets import get_preset

    out, _ = smoke
    study = study_module.Study(get_preset("smoke"), ARMS, 1, tmp_path / "study", progress=False)
    measured = json.loads((out / "base.json").read_text())

    @contextlib.contextmanager
    def held_by_another_until_it_wrote(folder, *, wait):  # the other process measured while this one waited
        assert folder == study.out and wait
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(out / "base.json", folder / "base.json")
        yield

    monkeypatch.setattr(study_module.Study, "_measure_base", lambda self, fp: pytest.fail("measured it twice"))
    monkeypatch.setattr(claims, "hold", held_by_another_until_it_wrote)
    assert study.base() == measured
    monkeypatch.undo()
    (study.out / "base.json").unlink()
    claimed = []
    monkeypatch.setattr(study_module.Study, "_measure_base",
                        lambda self, fp: claimed.append((self.out / claims.CLAIM_NAME).is_file()) or measured)
    assert study.base() == measured and claimed == [True]  # measured under the folder's claim
    assert not (study.out / claims.CLAIM_NAME).exists()
