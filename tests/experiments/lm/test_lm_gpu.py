"""The ``gpu`` preset's path on CPU at a tiny size: the corpus pack (dedup before the split, manifest, hash, refusal
of a tampered pack), one pass over the training text, the FLOP estimate, and ``seednorm lm --preset gpu`` end to
end: its four grid runs by default, the recipe run and the step timing on request, and its report."""

from __future__ import annotations

import hashlib
import json
import lzma
from pathlib import Path

import pytest
import torch

from seednorm_experiments.lm import corpus_pack, data
from seednorm_experiments.lm.cli import main
from seednorm_experiments.lm.data import OnePassBatches
from seednorm_experiments.lm.gpu import non_embedding_params, train_flops
from seednorm_experiments.lm.presets import get_preset, parse_overrides

BASE = {"train/plays": ["to be or not to be"], "train/code": ["x = 1\n"], "plays": ["exeunt"],
        "code": ["y = 2\n"], "folio": ["vnfold"], "bible": ["In the beginning"], "docstrings": ["Return x."]}
DOC_FREE = 'def f():\n    """Doc."""\n    return {}\n'


@pytest.fixture
def tiny_base(monkeypatch):
    monkeypatch.setattr(corpus_pack, "raw_split_texts", lambda max_chars: {k: list(v) for k, v in BASE.items()})


def _write_sources(root: Path, count: int) -> None:
    (root / "pkg").mkdir(parents=True)
    for i in range(count):
        (root / "pkg" / f"m{i}.py").write_text(DOC_FREE.format(i))
    (root / "pkg" / "zz_copy_of_m0.py").write_text(DOC_FREE.format(0))  # identical content: dropped as a duplicate
    (root / "pkg" / "stdlib_copy.py").write_text("x = 1\n")  # identical to a standard-library file
    (root / "pkg" / "broken.py").write_text("def (:\n")  # does not parse: skipped


def test_pack_dedups_before_the_split_and_records_its_hash(tmp_path, tiny_base):
    _write_sources(tmp_path / "site", 40)
    digest = corpus_pack.build_pack(tmp_path / "pack", [tmp_path / "site"])
    manifest = json.loads((tmp_path / "pack" / "manifest.json").read_text())
    kept = {f["path"] for f in manifest["files"]}
    assert len(kept) == 40 and "pkg/zz_copy_of_m0.py" not in kept and "pkg/broken.py" not in kept
    assert {d["path"] for d in manifest["duplicates"]} == {"pkg/zz_copy_of_m0.py", "pkg/stdlib_copy.py"}
    texts, _ = corpus_pack.read_pack(tmp_path / "pack")
    # the split is by the content hash: a file is held out iff the first byte of SHA-256(code) < 26
    for i in range(40):
        code = DOC_FREE.format(i).replace('    """Doc."""\n', "")
        held = hashlib.sha256(code.encode()).digest()[0] < 26
        record = next(f for f in manifest["files"] if f["path"] == f"pkg/m{i}.py")
        assert record["split"] == ("code" if held else "train/code")
        assert record["sha256"] == hashlib.sha256(DOC_FREE.format(i).encode()).hexdigest()
    assert '"""Doc."""' not in texts["train/code"] + texts["code"]  # docstrings removed, as for the stdlib
    assert texts["train/code"].count("return 0\n") + texts["code"].count("return 0\n") == 1  # one copy, one side
    splits = {k: hashlib.sha256(v.encode()).hexdigest() for k, v in texts.items()}
    expected = hashlib.sha256(json.dumps(splits, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert digest == manifest["sha256"] == expected == corpus_pack.verify_pack(tmp_path / "pack")


def test_tampered_pack_is_refused(tmp_path, tiny_base):
    _write_sources(tmp_path / "site", 3)
    corpus_pack.build_pack(tmp_path / "pack", [tmp_path / "site"])
    path = tmp_path / "pack" / "bible.txt.xz"
    path.write_bytes(lzma.compress(b"In the beginning was another text"))
    with pytest.raises(ValueError, match="fails its manifest"):
        corpus_pack.verify_pack(tmp_path / "pack")


def test_one_pass_batches_are_disjoint_windows_and_never_wrap():
    tokens = {"train/plays": torch.arange(0, 41), "train/code": torch.arange(41, 101)}
    corpus = data.Corpus(tokens, torch.ones(1), 101, Path("unused"))
    batches = OnePassBatches(corpus, batch_size=3, seq_len=10, seed=5)
    assert batches.windows == 10 and batches.steps == 3  # (101 - 1) // 10 windows, 3 whole batches of 3
    starts = []
    for step in range(3):
        x, y = batches(step, 0, 1)
        assert x.shape == (3, 10) and torch.equal(y, x + 1)  # targets are the next tokens of the same window
        starts += (x[:, 0] // 10).tolist()
        assert all(int(v) % 10 == 0 for v in x[:, 0])
    assert len(set(starts)) == 9  # nine different windows: no token is an input twice
    half = batches(1, 1, 3)[0]  # rank 1 of 3 takes row 1 of the global batch
    assert torch.equal(half, batches(1, 0, 1)[0][1:2])
    with pytest.raises(ValueError, match="past one pass"):
        batches(3, 0, 1)
    with pytest.raises(ValueError, match="more than one pass"):
        batches.require(4)


def test_gpu_preset_size_and_flop_estimate():
    preset = get_preset("gpu")
    n = non_embedding_params(preset, preset.vocab_size)
    hidden = 1376  # 8/3 · 512 rounded up to a multiple of 32
    per_layer = 4 * 512 * 512 + 3 * 512 * hidden + 2 * 512  # attention, SwiGLU, two norms' γ
    assert n == 8 * per_layer + 512 and n >= 25_000_000
    assert preset.tokens_per_run == 550 * 128 * 512 >= 35_000_000
    flops = train_flops(preset, preset.vocab_size)
    assert flops == pytest.approx(preset.tokens_per_run * (6 * (n + 8192 * 512) + 12 * 8 * 512 * 512))
    # four runs of ≈ 36 s at the assumed 200 TFLOP/s (≈ 55 s at 133): the grid fits the 400 s lm stage
    assert 4 * flops / 200e12 <= 150 and 4 * flops / 133e12 <= 225
    # the two rates the CPU size curve's trend points to at this size (presets.py)
    assert [preset.lr * m for m in preset.lr_grid] == pytest.approx([1e-3, 2e-3])
    assert parse_overrides(["dim=32", "compile=false", "lr_grid=1,3", "max_chars=none"]) == {
        "dim": 32, "compile": False, "lr_grid": (1.0, 3.0), "max_chars": None}
    with pytest.raises(ValueError, match="FIELD=VALUE"):
        parse_overrides(["width=3"])


FLAGS = ["--no-progress", "--override", "vocab_size=300", "dim=32", "n_layers=1",
         "n_heads=2", "seq_len=32", "batch_size=4", "steps=3", "warmup=1", "eval_windows=2", "cloze_items=4",
         "cloze_context=16", "cloze_length=8", "max_chars=30000", "ckpt_every=0", "compile=false"]


def test_gpu_preset_runs_end_to_end_at_a_tiny_size(tmp_path, monkeypatch):
    site = tmp_path / "site"
    _write_sources(site, 6)
    pack = tmp_path / "pack"
    corpus_pack.build_pack(pack, [site], max_chars=30_000)
    monkeypatch.setenv(corpus_pack.PACK_ENV, str(pack))
    out = tmp_path / "lm"
    # by default the grid alone: no recipe run, no step timing
    assert main(["--preset", "gpu", "--out", str(out), *FLAGS]) == 0
    report = (out / "report.md").read_text()
    assert f"pack sha256 `{corpus_pack.verify_pack(pack)}`" in report
    grid = ("rmsnorm @ 0.001", "seednorm @ 0.001", "rmsnorm @ 0.002", "seednorm @ 0.002")
    assert [line[2:].split(" |")[0] for line in report.splitlines() if line.startswith(("| rmsnorm @", "| seednorm"))
            and " @ " in line] == list(grid)
    assert "Step cost: not timed" in report and "step cost vs RMSNorm" not in report
    assert "(`seednorm-dot-rsqrt`) was not run" in report and not (out / "runs" / "seednorm-dot-rsqrt").exists()
    assert "One seed resolves nothing below ~0.01 bits per byte" in report
    best = next(line for line in report.splitlines() if line.startswith("| seednorm |"))
    assert "unresolved (within ±0.01)" in best or "by more than 0.01 (one draw)" in best
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["runs"]) == 4 and set(summary["delta"]) == {"seednorm"}
    assert summary["resolution_bpb"] == 0.01

    # --recipe and --throughput-rounds on the same folder: the grid's runs are reused, the recipe run added
    assert main(["--preset", "gpu", "--out", str(out), "--resume", "--recipe", "--throughput-rounds", "2",
                 *FLAGS]) == 0
    report = (out / "report.md").read_text()
    for run in (*grid, "seednorm-dot-rsqrt @ "):
        assert f"| {run}" in report
    assert "step cost vs RMSNorm" in report and "was not run" not in report
    assert (out / "loss.png").read_bytes()[:4] == b"\x89PNG"
    (folder,) = (out / "runs" / "seednorm-dot-rsqrt").iterdir()
    result = json.loads((folder / "seed0" / "result.json").read_text())
    sig = result["fingerprint"]["signature"]
    assert sig["one_pass"] is True and sig["model"]["norm_kwargs"]["dot_scale"] == pytest.approx(32 ** -0.5)
    assert len(result["history"]) == 3
    # summary.json: what the size curve draws beside the CPU points (each variant at its best rate − RMSNorm's best)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["non_embedding_params"] == non_embedding_params(get_preset("gpu", dim=32, n_layers=1, n_heads=2),
                                                                   300)
    assert summary["tokens_per_run"] == 3 * 4 * 32 and len(summary["runs"]) == 5
    assert set(summary["delta"]) == {"seednorm", "seednorm-dot-rsqrt"}
    evals = {(r["variant"], r["lr"]): r["final_eval"] for r in summary["runs"]}
    bpb = {k: (e["bpb/plays"] + e["bpb/code"]) / 2 for k, e in evals.items()}
    base = min(v for (n, _), v in bpb.items() if n == "rmsnorm")
    best = min(v for (n, _), v in bpb.items() if n == "seednorm")
    assert summary["delta"]["seednorm"]["in_domain_bpb"] == pytest.approx(best - base)

    # --report-only rebuilds the same report and summary from the records alone (the runs' folders left behind)
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("report.md", "runs.jsonl", "summary.json"):
        (copy / name).write_bytes((out / name).read_bytes())
    assert main(["--preset", "gpu", "--out", str(copy), "--recipe", "--throughput-rounds", "2", "--report-only",
                 *FLAGS]) == 0
    rows = [line for line in report.splitlines() if line.startswith("|")]
    assert [line for line in (copy / "report.md").read_text().splitlines() if line.startswith("|")] == rows
    assert json.loads((copy / "summary.json").read_text()) == summary
    assert not (copy / "runs").exists()


def test_recipe_and_timing_options_belong_to_the_gpu_preset(tmp_path, capsys):
    assert main(["--preset", "smoke", "--out", str(tmp_path / "lm"), "--recipe"]) == 2
    assert "--recipe and --throughput-rounds apply to a preset with lr_grid" in capsys.readouterr().err
    assert not (tmp_path / "lm").exists()


def test_gpu_preset_refuses_a_second_pass(tmp_path, monkeypatch, capsys):
    site = tmp_path / "site"
    _write_sources(site, 2)
    pack = tmp_path / "pack"
    corpus_pack.build_pack(pack, [site], max_chars=2_000)
    monkeypatch.setenv(corpus_pack.PACK_ENV, str(pack))
    argv = ["--preset", "gpu", "--out", str(tmp_path / "lm"), *FLAGS, "max_chars=2000", "steps=500"]
    assert main(argv) == 2
    assert "more than one pass over the training text (" in capsys.readouterr().err
    assert not (tmp_path / "lm" / "runs").exists()
