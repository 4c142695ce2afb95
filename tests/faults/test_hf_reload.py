"""Fault injection: a converted Hugging Face checkpoint whose config.seednorm was tampered with, mixed up with other
weights or written by hand. Each loads with one clear ValueError, never with other logits."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

transformers = pytest.importorskip("transformers")

from seednorm import SeeDNorm  # noqa: E402
from seednorm.integrations import transformers as sn_hf  # noqa: E402

CONFIG = {
    "vocab_size": 96,
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 8,
    "max_position_embeddings": 64,
}
LAYER = "model.layers.0.input_layernorm"


def _saved(path, **options):
    """A converted Qwen3 (QK-norms left out) with trained-looking α, β, saved to ``path``."""
    torch.manual_seed(0)
    model = sn_hf.convert(
        transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**CONFIG)).eval(),
        exclude=["*q_norm", "*k_norm"],
        **options,
    )
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, SeeDNorm):
                m.alpha.normal_()
                m.beta.normal_(std=0.3)
    model.save_pretrained(path)
    return model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("hf_reload") / "ckpt"
    _saved(path)
    return path


def _tampered(checkpoint, tmp_path, edit):
    """A copy of ``checkpoint`` whose config.json's seednorm entry is ``edit(entry)`` (edited in place or returned)."""
    path = tmp_path / "tampered"
    shutil.copytree(checkpoint, path)
    config = json.loads((path / "config.json").read_text())
    result = edit(config["seednorm"])
    config["seednorm"] = config["seednorm"] if result is None else result
    (path / "config.json").write_text(json.dumps(config))
    return path


def _layer(option, value):
    return lambda entry: entry["layers"][LAYER].__setitem__(option, value)


MISMATCH = "does not match config.seednorm"
CASES = {
    # options that leave every shape alone: only the fingerprint in the checkpoint can tell
    "heads": (_layer("num_heads", 2), f"{MISMATCH}: '{LAYER}' was saved with other options"),
    "center": (_layer("center", True), f"{MISMATCH}: '{LAYER}' was saved with other options"),
    "dot_scale": (_layer("dot_scale", "dim"), f"{MISMATCH}: '{LAYER}' was saved with other options"),
    "activation": (_layer("activation", "softsign"), f"{MISMATCH}: '{LAYER}' was saved with other options"),
    "eps": (_layer("eps", 1e-3), f"{MISMATCH}: '{LAYER}' was saved with other options"),
    # options that change what the layer's state dict holds
    "bias": (_layer("bias", True), f"{MISMATCH}: missing from the checkpoint: {LAYER}.bias"),
    "width": (_layer("normalized_shape", 16), f"'{LAYER}' .* has width 32, the record says 16"),
    # the set of layers: a layer left out (as by a wider exclude) or one added (as by a narrower exclude)
    "layer dropped": (
        lambda entry: entry["layers"].pop(LAYER) and None,
        f"{MISMATCH}: in the checkpoint for layers or parameters the record does not list: {LAYER}.alpha",
    ),
    "layer added": (
        lambda entry: entry["layers"].__setitem__(
            "model.layers.0.self_attn.q_norm", dict(entry["layers"][LAYER], normalized_shape=8)
        ),
        f"{MISMATCH}: missing from the checkpoint: model.layers.0.self_attn.q_norm.alpha",
    ),
    "not a norm": (
        lambda entry: entry["layers"].__setitem__("lm_head", entry["layers"][LAYER]),
        r"'lm_head' \(torch.nn.modules.linear.Linear\) is not a norm layer",
    ),
    "no such module": (
        lambda entry: entry["layers"].__setitem__("model.layers.7.input_layernorm", entry["layers"][LAYER]),
        "'model.layers.7.input_layernorm': Qwen3ForCausalLM has no module of that name",
    ),
    "invalid option": (_layer("num_heads", 3), r"the recorded options .* are invalid: num_heads=3 does not divide"),
    # not a record at all
    "a string": (lambda entry: "yes", "config.seednorm of .* is 'yes', not the mapping sn_hf.convert records"),
    "a list": (lambda entry: [entry], "not the mapping sn_hf.convert records"),
    "options as convert arguments": (
        lambda entry: {"num_heads": 1, "alpha_init": 1.0, "include": None, "exclude": None, "center": None},
        r"is not a format-1 record .*got keys \['alpha_init', 'center', 'exclude', 'include', 'num_heads'\]",
    ),
    "another format": (lambda entry: {**entry, "format": 2}, "is not a format-1 record .* and format 2"),
    "no layers": (lambda entry: {**entry, "layers": {}}, r"\['layers'\] must be a non-empty mapping"),
    "unknown option": (_layer("gain", 2.0), f"layer '{LAYER}' must have the options .*, got .*'gain'"),
    "missing option": (
        lambda entry: entry["layers"][LAYER].pop("activation") and None,
        f"layer '{LAYER}' must have the options",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_tampered_record_is_refused(case, checkpoint, tmp_path):
    edit, message = CASES[case]
    with pytest.raises(ValueError, match=message):
        sn_hf.from_pretrained(transformers.AutoModelForCausalLM, _tampered(checkpoint, tmp_path, edit))


def test_untampered_copy_loads(checkpoint, tmp_path):
    model = sn_hf.from_pretrained(transformers.AutoModelForCausalLM, _tampered(checkpoint, tmp_path, lambda e: None))
    assert sum(isinstance(m, SeeDNorm) for m in model.modules()) == 5


def test_config_of_other_weights_is_refused(checkpoint, tmp_path):
    """config.json of a checkpoint converted with other options, next to these weights."""
    other = tmp_path / "other"
    _saved(other, num_heads=4, dot_scale="dim")
    mixed = tmp_path / "mixed"
    shutil.copytree(checkpoint, mixed)
    shutil.copy(other / "config.json", mixed / "config.json")
    with pytest.raises(ValueError, match=f"{MISMATCH}: '.*' was saved with other options"):
        sn_hf.from_pretrained(transformers.AutoModelForCausalLM, mixed)


def test_record_passed_as_config_object_is_checked_too(checkpoint):
    config = transformers.AutoConfig.from_pretrained(checkpoint, trust_remote_code=True)  # the saved code's config
    config.seednorm = "yes"
    with pytest.raises(ValueError, match="is 'yes', not the mapping"):
        sn_hf.from_pretrained(transformers.AutoModelForCausalLM, checkpoint, config=config)
    assert config.seednorm == "yes"  # the caller's config object is not changed
