"""Hugging Face transformers: tiny random models convert exactly, train, save and reload (all offline)."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from seednorm import SeeDNorm, convert_to_seednorm, param_groups  # noqa: E402
from seednorm.integrations import transformers as sn_hf  # noqa: E402

TOKENS = {"vocab_size": 96, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
DECODER = {
    **TOKENS,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 64,
}
CONFIGS = {
    "llama": lambda: transformers.LlamaConfig(**DECODER),
    "qwen2": lambda: transformers.Qwen2Config(**DECODER),
    "gemma": lambda: transformers.GemmaConfig(**DECODER, head_dim=8),  # γ = 1 + weight
    "gemma2": lambda: transformers.Gemma2Config(**DECODER, head_dim=8),  # 4 norms per layer
    "gemma3": lambda: transformers.Gemma3TextConfig(**DECODER, head_dim=8),  # and per-head QK-norms
    "olmo2": lambda: transformers.Olmo2Config(**DECODER),  # post-norms and full-width QK-norms
    "qwen3": lambda: transformers.Qwen3Config(**DECODER, head_dim=8),  # per-head QK-norms
    "phi3": lambda: transformers.Phi3Config(**DECODER),
    "gpt2": lambda: transformers.GPT2Config(**TOKENS, n_embd=32, n_layer=2, n_head=4, n_positions=64),  # LayerNorm
}
NORM_COUNT = {  # 2 layers: per-layer norms × 2 + the final norm
    "llama": 5,
    "qwen2": 5,
    "gemma": 5,
    "gemma2": 9,
    "gemma3": 13,
    "olmo2": 9,
    "qwen3": 9,
    "phi3": 5,
    "gpt2": 5,
}


def tiny_model(name: str) -> transformers.PreTrainedModel:
    """A random model whose norm gains and biases look trained (not 1 and 0), in eval mode."""
    model = transformers.AutoModelForCausalLM.from_config(CONFIGS[name]())
    with torch.no_grad():
        for module in model.modules():
            for p in module.parameters(recurse=False):
                if p.dim() == 1:
                    p.add_(torch.randn_like(p) * 0.3)
    return model.eval()


def logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


@pytest.fixture
def ids():
    return torch.randint(3, TOKENS["vocab_size"], (2, 12))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_conversion_keeps_logits_and_one_step_moves_every_beta(name, ids):
    model = tiny_model(name)
    before = logits(model, ids)
    convert_to_seednorm(model)
    norms = {n: m for n, m in model.named_modules() if isinstance(m, SeeDNorm)}
    assert len(norms) == NORM_COUNT[name]
    assert torch.allclose(logits(model, ids), before, rtol=0, atol=1e-5)

    model.train()
    optimizer = torch.optim.AdamW(param_groups(model, weight_decay=0.1), lr=1e-3)
    model(ids, labels=ids).loss.backward()
    optimizer.step()
    unchanged = [n for n, m in norms.items() if not (m.beta != 0).all()]
    assert not unchanged, f"β did not move in {unchanged}"


def test_state_dict_keys_keep_their_names(ids):
    model = tiny_model("llama")
    keys = set(model.state_dict())
    convert_to_seednorm(model)
    new = set(model.state_dict()) - keys
    assert keys <= set(model.state_dict())
    assert new == {k.replace(".weight", s) for k in keys if "norm.weight" in k for s in (".alpha", ".beta")}


@pytest.mark.parametrize(("name", "exclude"), [("gemma2", None), ("gpt2", None), ("qwen3", ["*q_norm", "*k_norm"])])
def test_save_pretrained_and_reload_round_trip(name, exclude, ids, tmp_path):
    model = sn_hf.convert(tiny_model(name), exclude=exclude)
    with torch.no_grad():  # a "trained" SeeDNorm: α, β away from their init
        for m in model.modules():
            if isinstance(m, SeeDNorm):
                m.alpha.normal_()
                m.beta.normal_(std=0.3)
    expected = logits(model, ids)
    model.save_pretrained(tmp_path)

    reloaded = sn_hf.from_pretrained(transformers.AutoModelForCausalLM, tmp_path)
    assert type(reloaded) is type(model)
    assert reloaded.config.seednorm == model.config.seednorm
    assert [n for n, m in reloaded.named_modules() if isinstance(m, SeeDNorm)] == [
        n for n, m in model.named_modules() if isinstance(m, SeeDNorm)
    ]
    assert torch.equal(logits(reloaded, ids), expected)
    if exclude:
        assert type(reloaded.model.layers[0].self_attn.q_norm).__name__ == "Qwen3RMSNorm"


def test_from_pretrained_needs_the_marker_and_all_seednorm_weights(tmp_path):
    plain = tiny_model("llama")
    plain.save_pretrained(tmp_path / "plain")
    with pytest.raises(ValueError, match="no 'seednorm' entry"):
        sn_hf.from_pretrained(transformers.LlamaForCausalLM, tmp_path / "plain")

    model = sn_hf.convert(tiny_model("llama"))
    partial = {k: v for k, v in model.state_dict().items() if not k.endswith(".alpha")}
    model.save_pretrained(tmp_path / "partial", state_dict=partial)
    with pytest.raises(
        ValueError,
        match="does not match config.seednorm: missing from the checkpoint: model.layers.0.input_layernorm.alpha",
    ):
        sn_hf.from_pretrained(transformers.LlamaForCausalLM, tmp_path / "partial")
    with pytest.raises(ValueError, match="5 module\\(s\\) are SeeDNorm already"):
        sn_hf.convert(model)


def test_trainer_decays_alpha_and_beta_with_create_optimizer(ids, tmp_path):
    model = sn_hf.convert(tiny_model("llama"))
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=1,
        per_device_train_batch_size=2,
        learning_rate=1e-3,
        weight_decay=0.1,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
    )
    optimizer = sn_hf.create_optimizer(model, args)
    assert isinstance(optimizer, torch.optim.AdamW)
    dynamic = {id(p) for m in model.modules() if isinstance(m, SeeDNorm) for p in (m.alpha, m.beta)}
    (group,) = [g for g in optimizer.param_groups if g["name"] == "seednorm"]
    assert {id(p) for p in group["params"]} == dynamic and group["weight_decay"] == 0.1

    data = [{"input_ids": row, "labels": row} for row in ids]
    trainer = transformers.Trainer(model=model, args=args, train_dataset=data, optimizers=(optimizer, None))
    trainer.train()
    assert getattr(trainer.optimizer, "optimizer", trainer.optimizer) is optimizer  # accelerate may wrap it
    assert all((m.beta != 0).all() for m in model.modules() if isinstance(m, SeeDNorm))


REMOTE_CODE = """
import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel


class ToyConfig(PretrainedConfig):
    model_type = "seednorm-remote-toy"

    def __init__(self, hidden_size=16, vocab_size=32, **kwargs):
        self.hidden_size, self.vocab_size = hidden_size, vocab_size
        super().__init__(**kwargs)


class ToyModel(PreTrainedModel):
    config_class = ToyConfig

    def __init__(self, config):
        super().__init__(config)
        self.embed = nn.Embedding(config.vocab_size, config.hidden_size)
        self.norm = nn.RMSNorm(config.hidden_size, eps=1e-6)
        self.head = nn.Linear(config.hidden_size, config.vocab_size)
        self.post_init()

    def forward(self, input_ids):
        return self.head(self.norm(self.embed(input_ids)))
"""


def test_from_pretrained_loads_a_remote_code_model_through_an_auto_class(tmp_path, monkeypatch):
    """A checkpoint whose model class lives in its own code (config.auto_map, trust_remote_code=True)."""
    import importlib

    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "toy_remote_model.py").write_text(REMOTE_CODE)
    monkeypatch.syspath_prepend(str(tmp_path / "code"))
    remote = importlib.import_module("toy_remote_model")
    remote.ToyConfig.register_for_auto_class()
    remote.ToyModel.register_for_auto_class("AutoModel")
    model = sn_hf.convert(remote.ToyModel(remote.ToyConfig()))
    with torch.no_grad():
        model.norm.beta.normal_(std=0.3)
    ids = torch.randint(0, 32, (2, 5))
    model.save_pretrained(tmp_path / "ckpt")

    with pytest.raises(ValueError, match="trust_remote_code=True"):
        sn_hf.from_pretrained(transformers.AutoModel, tmp_path / "ckpt")
    reloaded = sn_hf.from_pretrained(transformers.AutoModel, tmp_path / "ckpt", trust_remote_code=True)
    assert isinstance(reloaded.norm, SeeDNorm)
    assert type(reloaded).__name__ == "ToyModel"
    with torch.no_grad():
        assert torch.equal(reloaded(ids), model(ids))


def _train_dynamic(model, std=0.3):
    """A "trained" SeeDNorm: α, β (and the bias) away from their init."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, SeeDNorm):
                m.alpha.normal_()
                m.beta.normal_(std=std)
                if m.bias is not None:
                    m.bias.normal_()
    return model


def test_options_set_on_the_layers_survive_save_and_reload(ids, tmp_path):
    from seednorm.convert import layer_options

    model = sn_hf.convert(tiny_model("qwen2"), dot_scale=32**-0.5, exclude="model.norm")
    sn_hf.convert(model, include="model.norm", num_heads=4, activation="softsign")  # more layers, other options
    layers = model.model.layers
    layers[0].input_layernorm.activation = "hardtanh"  # options changed on a layer after conversion
    layers[1].post_attention_layernorm.num_heads = 2
    layers[1].input_layernorm.dot_scale = "dim"
    _train_dynamic(model)
    expected = logits(model, ids)
    model.save_pretrained(tmp_path)

    reloaded = sn_hf.from_pretrained(transformers.AutoModelForCausalLM, tmp_path)
    assert torch.equal(logits(reloaded, ids), expected)
    options = {n: layer_options(m) for n, m in model.named_modules() if isinstance(m, SeeDNorm)}
    assert {n: layer_options(m) for n, m in reloaded.named_modules() if isinstance(m, SeeDNorm)} == options
    assert reloaded.config.seednorm == {"format": 1, "layers": options} == model.config.seednorm


BERT_LIKE = {  # LayerNorm modules named "LayerNorm": transformers renames their legacy keys .beta/.gamma on load
    "bert": lambda: transformers.BertForMaskedLM(transformers.BertConfig(**ENCODER)),
    "roberta": lambda: transformers.RobertaForMaskedLM(transformers.RobertaConfig(**ENCODER, pad_token_id=1)),
    "albert": lambda: transformers.AlbertForMaskedLM(transformers.AlbertConfig(**ENCODER, embedding_size=16)),
    "electra": lambda: transformers.ElectraForMaskedLM(transformers.ElectraConfig(**ENCODER, embedding_size=16)),
}
ENCODER = {
    "vocab_size": 96,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "max_position_embeddings": 64,
}


@pytest.mark.parametrize("name", sorted(BERT_LIKE))
def test_bert_family_round_trip_keeps_beta_apart_from_the_bias(name, ids, tmp_path):
    model = _train_dynamic(sn_hf.convert(BERT_LIKE[name]().eval()))
    norms = {n: m for n, m in model.named_modules() if isinstance(m, SeeDNorm)}
    assert any(n.endswith("LayerNorm") for n in norms) and all(m.bias is not None for m in norms.values())
    expected = logits(model, ids)
    model.save_pretrained(tmp_path)

    reloaded = sn_hf.from_pretrained(type(model), tmp_path)
    assert torch.equal(logits(reloaded, ids), expected)
    for n, m in reloaded.named_modules():
        if n in norms:
            assert torch.equal(m.beta, norms[n].beta) and torch.equal(m.bias, norms[n].bias)

    with pytest.raises(AttributeError, match="a SeeDNorm checkpoint, which transformers' own model classes"):
        type(model).from_pretrained(tmp_path)  # the plain class refuses the checkpoint's config
    # given a plain config, it rebuilds LayerNorms: their bias is the bias, never β
    plain = type(model).from_pretrained(tmp_path, config=plain_config(tmp_path, type(model.config)))
    for n, m in plain.named_modules():
        if n in norms:
            assert isinstance(m, torch.nn.LayerNorm) and torch.equal(m.bias, norms[n].bias)


def test_convert_leaves_the_callers_config_alone(ids):
    config = CONFIGS["llama"]()
    first, second = (transformers.LlamaForCausalLM(config) for _ in range(2))
    sn_hf.convert(first)
    assert getattr(config, "seednorm", None) is None and getattr(second.config, "seednorm", None) is None
    assert first.model.config is first.config is not config  # submodules share the model's own copy
    sn_hf.convert(second, num_heads=4)  # a second model from the same config converts too
    assert {m.num_heads for m in first.modules() if isinstance(m, SeeDNorm)} == {1}


def plain_config(path, config_class):
    """The checkpoint's config.json read as ``config_class`` with the dtype it was saved with: what a plain
    transformers class builds when it is handed the config (it refuses the file's own)."""
    import json

    saved = json.loads((path / "config.json").read_text())
    saved["dtype"] = saved.pop("torch_dtype")
    return config_class.from_dict({k: v for k, v in saved.items() if k not in ("model_type", "auto_map")})


def test_convert_refuses_a_seednorm_checkpoint_loaded_plainly(tmp_path):
    sn_hf.convert(tiny_model("llama")).save_pretrained(tmp_path)
    config = plain_config(tmp_path, transformers.LlamaConfig)
    plain = transformers.LlamaForCausalLM.from_pretrained(tmp_path, config=config)  # α, β dropped
    with pytest.raises(ValueError, match="loaded from a SeeDNorm checkpoint with a plain from_pretrained"):
        sn_hf.convert(plain)


def test_load_state_dict_checks_the_options_fingerprint():
    model = sn_hf.convert(tiny_model("llama"))
    state = model.state_dict()
    assert "model.norm.seednorm_beta" in state and "model.norm.beta" not in state
    model.load_state_dict(state)
    model.model.norm.dot_scale = 0.5
    with pytest.raises(RuntimeError, match="model.norm.seednorm_options: the state dict was saved from a SeeDNorm"):
        model.load_state_dict(state)


LOAD_PLAINLY = """
import sys

import torch
import transformers

path, ids_file, out_file = sys.argv[1:4]
if "--no-seednorm" in sys.argv:  # as if seednorm were not installed

    class NotInstalled:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "seednorm":
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    sys.meta_path.insert(0, NotInstalled())
assert "seednorm" not in sys.modules
for trust in (None, True):  # None: not passed (transformers would ask on a terminal; stdin is empty here)
    try:
        kwargs = {} if trust is None else {"trust_remote_code": trust}
        model = transformers.AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except Exception as error:
        print(f"\\ntrust_remote_code={trust}: {type(error).__name__}: " + str(error).replace("\\n", " "))
        continue
    norms = sorted({type(m).__name__ for m in model.modules() if type(m).__name__.endswith("Norm")})
    print(f"\\ntrust_remote_code={trust}: loaded {type(model).__name__} with {norms}")  # a line of its own
    with torch.no_grad():
        torch.save(model(torch.load(ids_file)).logits, out_file)
"""


def _load_plainly(path, tmp_path, ids, *flags):
    """Load ``path`` with plain transformers in a fresh process (seednorm never imported by the script), without
    and then with ``trust_remote_code=True``; what each did, and the logits of the model that loaded (or None)."""
    import os
    import subprocess
    import sys

    torch.save(ids, tmp_path / "ids.pt")
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
        "HOME": str(tmp_path),
        "HF_HOME": str(tmp_path / "hf"),
        "HF_MODULES_CACHE": str(tmp_path / "modules"),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
    }
    out = tmp_path / "logits.pt"
    done = subprocess.run(
        [sys.executable, "-c", LOAD_PLAINLY, str(path), str(tmp_path / "ids.pt"), str(out), *flags],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("trust_remote_code=")]
    return lines, (torch.load(out) if out.exists() else None)


@pytest.mark.parametrize(("name", "norm"), [("llama", "HFSeeDNorm")])  # all 9: test_every_architecture_...
def test_saved_code_rebuilds_the_model_in_plain_transformers(name, norm, ids, tmp_path):
    model = sn_hf.convert(tiny_model(name))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, SeeDNorm):
                m.alpha.normal_()
                m.beta.normal_(std=0.3)
    expected = logits(model, ids)
    model.save_pretrained(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "modeling_seednorm.py").exists()

    (refused, loaded), got = _load_plainly(tmp_path / "ckpt", tmp_path, ids)
    assert refused.startswith("trust_remote_code=None: ValueError: ")
    assert "contains custom code" in refused and "trust_remote_code=True" in refused
    cls = type(model).__name__
    assert loaded == f"trust_remote_code=True: loaded SeeDNorm{cls} with ['{norm}']"
    assert torch.equal(got, expected)

    reloaded = sn_hf.from_pretrained(transformers.AutoModelForCausalLM, tmp_path / "ckpt")  # no remote code needed
    assert type(reloaded) is type(model)
    assert torch.equal(logits(reloaded, ids), expected)
    reloaded.save_pretrained(tmp_path / "again")  # and its save writes the code again
    assert (tmp_path / "again" / "modeling_seednorm.py").read_text() == (
        tmp_path / "ckpt" / "modeling_seednorm.py"
    ).read_text()


def test_saved_code_without_seednorm_installed_names_the_package(ids, tmp_path):
    sn_hf.convert(tiny_model("llama")).save_pretrained(tmp_path / "ckpt")
    (refused, failed), got = _load_plainly(tmp_path / "ckpt", tmp_path, ids, "--no-seednorm")
    assert refused.startswith("trust_remote_code=None: ValueError: ")
    assert failed.startswith("trust_remote_code=True: ImportError: ")
    assert "seednorm" in failed and "`pip install seednorm`" in failed
    assert got is None


def test_saved_code_checks_the_checkpoint_against_the_record(tmp_path):
    """SeeDNorm<Model>.from_pretrained (the saved code's class) verifies as sn_hf.from_pretrained does."""
    import importlib.util

    model = sn_hf.convert(tiny_model("llama"))
    partial = {k: v for k, v in model.state_dict().items() if not k.endswith(".alpha")}
    model.save_pretrained(tmp_path, state_dict=partial)
    spec = importlib.util.spec_from_file_location("saved_seednorm_code", tmp_path / "modeling_seednorm.py")
    code = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(code)
    with pytest.raises(ValueError, match="missing from the checkpoint: model.layers.0.input_layernorm.alpha"):
        code.SeeDNormLlamaForCausalLM.from_pretrained(tmp_path)


def test_copies_and_pickles_of_a_converted_model_save_its_code(tmp_path):
    import copy
    import io

    model = sn_hf.convert(tiny_model("llama"))
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    for i, other in enumerate([copy.deepcopy(model), torch.load(buffer, weights_only=False)]):
        other.save_pretrained(tmp_path / str(i))
        assert (tmp_path / str(i) / "modeling_seednorm.py").exists()
        assert other.save_pretrained.model is other


LOAD_EVERY_WAY = """
import json
import sys

import torch
import transformers

plan, ids_file, out_file = sys.argv[1:4]
assert "seednorm" not in sys.modules
ids, results = torch.load(ids_file), {}
for name, path, cls in json.loads(open(plan).read()):
    seen = {}
    for how, load in (
        ("explicit", lambda p: getattr(transformers, cls).from_pretrained(p)),
        ("auto", lambda p: transformers.AutoModelForCausalLM.from_pretrained(p)),
        ("remote", lambda p: transformers.AutoModelForCausalLM.from_pretrained(p, trust_remote_code=True)),
    ):
        try:
            model = load(path)
        except Exception as error:
            seen[how] = f"{type(error).__name__}: " + str(error).replace("\\n", " ")
            continue
        norms = sorted({type(m).__name__ for m in model.modules() if type(m).__name__.endswith("Norm")})
        with torch.no_grad():
            logits = model(ids).logits
        seen[how] = {"class": type(model).__name__, "norms": norms}
        torch.save(logits, f"{path}/{how}.pt")
        if how == "remote" and name == "llama":  # the model loaded from the saved code, saved again
            model.save_pretrained(path + "-again")
    results[name] = seen
open(out_file, "w").write(json.dumps(results))
"""


def test_every_architecture_refuses_plain_classes_and_loads_with_its_code(ids, tmp_path):
    """For the 9 architectures, in one fresh process that never imports seednorm itself: the explicit transformers
    class (LlamaForCausalLM, ...) and the auto class without trust_remote_code refuse the checkpoint, with
    trust_remote_code=True the saved code rebuilds it exactly; a model loaded so and saved again refuses and loads
    the same way."""
    import json
    import os
    import subprocess
    import sys

    plan, expected = [], {}
    for name in sorted(CONFIGS):
        model = _train_dynamic(sn_hf.convert(tiny_model(name)))
        path = tmp_path / name
        model.save_pretrained(path)
        expected[name] = logits(model, ids)
        plan.append((name, str(path), type(model).__name__))
    (tmp_path / "plan.json").write_text(json.dumps(plan + [("llama-again", str(tmp_path / "llama-again"),
                                                            "LlamaForCausalLM")]))
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": os.environ.get("PYTHONPATH", ""), "HOME": str(tmp_path),
           "HF_HOME": str(tmp_path / "hf"), "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1",
           "OMP_NUM_THREADS": "1"}
    torch.save(ids, tmp_path / "ids.pt")
    command = [sys.executable, "-c", LOAD_EVERY_WAY, *(str(tmp_path / f) for f in ("plan.json", "ids.pt", "out"))]
    done = subprocess.run(command, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "out").read_text())
    expected["llama-again"] = expected["llama"]
    assert sorted(results) == sorted([*CONFIGS, "llama-again"])
    for name, seen in results.items():
        assert seen["explicit"].startswith("AttributeError: module 'torch' has no attribute 'not a dtype: a SeeDNorm "
                                           "checkpoint"), (name, seen["explicit"])
        assert seen["auto"].startswith("ValueError: ") and "trust_remote_code=True" in seen["auto"], (name, seen)
        cls = plan[[p[0] for p in plan].index(name.removesuffix("-again"))][2]
        assert seen["remote"] == {"class": f"SeeDNorm{cls}", "norms": ["HFSeeDNorm"]}, (name, seen["remote"])
        assert torch.equal(torch.load(tmp_path / name / "remote.pt"), expected[name]), name


def test_the_locked_dtype_is_read_back_and_locked_again(tmp_path):
    """config.json's dtype is the refusal sentence and torch_dtype the real dtype: sn_hf.from_pretrained and the
    saved code's config class read the real one (a bfloat16 model loads in bfloat16), and the config class writes
    the lock again."""
    import importlib.util
    import json

    sn_hf.convert(tiny_model("qwen3")).to(torch.bfloat16).save_pretrained(tmp_path / "ckpt")
    saved = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert saved["dtype"] == sn_hf.LOCKED_DTYPE and saved["torch_dtype"] == "bfloat16"
    loaded = sn_hf.from_pretrained(transformers.AutoModelForCausalLM, tmp_path / "ckpt")
    assert loaded.config.dtype == torch.bfloat16 and loaded.model.norm.seednorm_beta.dtype == torch.bfloat16

    spec = importlib.util.spec_from_file_location("saved_qwen3_code", tmp_path / "ckpt" / "modeling_seednorm.py")
    code = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(code)
    config = code.SeeDNormQwen3Config.from_pretrained(tmp_path / "ckpt")
    assert config.dtype == torch.bfloat16
    config.save_pretrained(tmp_path / "again")
    again = json.loads((tmp_path / "again" / "config.json").read_text())
    assert again["dtype"] == sn_hf.LOCKED_DTYPE and again["torch_dtype"] == "bfloat16"


def test_save_pretrained_push_to_hub_uploads_the_code_and_the_locked_config(tmp_path, monkeypatch):
    """transformers uploads at the end of its save_pretrained(push_to_hub=True): the code and the locked
    config.json are in the folder by then (the Hub calls are replaced by stand-ins that record the folder)."""
    import json
    import types

    from transformers import modeling_utils
    from transformers.utils.hub import PushToHubMixin

    uploaded = {}

    def upload(self, folder, repo_id, files_timestamps, **kwargs):
        config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
        uploaded.update(repo=repo_id, code=(tmp_path / "ckpt" / "modeling_seednorm.py").exists(), dtype=config["dtype"])

    class Api:
        def create_repo(self, repo_id, **kwargs):
            return types.SimpleNamespace(repo_id=f"user/{repo_id}")

    monkeypatch.setattr(modeling_utils, "hf_api", Api)
    monkeypatch.setattr(modeling_utils, "create_and_tag_model_card", lambda *a, **k: types.SimpleNamespace(
        save=lambda path: None))
    monkeypatch.setattr(PushToHubMixin, "_upload_modified_files", upload)
    model = sn_hf.convert(tiny_model("llama"))
    model.save_pretrained(tmp_path / "ckpt", push_to_hub=True)
    assert uploaded == {"repo": "user/ckpt", "code": True, "dtype": sn_hf.LOCKED_DTYPE}
    assert "_upload_modified_files" not in model.__dict__
