"""torchtitan with SeeDNorm: the converter on torchtitan's Llama3 debug model, its optimizer groups, and the model
under FSDP2, tensor + sequence parallel, torch.compile and distributed checkpointing on 2 CPU processes (gloo).

torchtitan's trainer itself needs an accelerator (it sets a CUDA device), so the distributed tests run the pieces it
is made of: ``fully_shard``, the Llama3 sharding plan applied by ``Module.parallelize``, ``torch.compile``, DCP.
The distributed phases run in one 2-process spawn (a module fixture); each test checks one phase's result.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
from gloo import assert_phase, phase_results, run_phases
from torchtitan.components.optimizer import OptimizersContainer
from torchtitan.models.common.attention import ScaledDotProductAttention
from torchtitan.models.llama3 import model_registry
from torchtitan.models.qwen3 import model_registry as qwen3_registry

import seednorm
from seednorm.integrations.torchtitan import SeeDNorm, SeeDNormConverter, seednorm_adamw

VOCAB, BATCH, SEQ = 2048, 2, 8


def _config(converter: SeeDNormConverter.Config | None, n_layers: int = 2):
    """torchtitan's Llama3 debug model config, cut to ``n_layers`` blocks, with causal SDPA (no flex compile)."""
    cfg = model_registry("debugmodel", converters=None if converter is None else [converter]).model
    cfg.layers = cfg.layers[:n_layers]
    for layer in cfg.layers:
        layer.attention.inner_attention = ScaledDotProductAttention.Config()
    return cfg


def _build(cfg, seed: int = 0):
    """As torchtitan's trainer does: build on the meta device, materialize, ``init_states``."""
    with torch.device("meta"):
        model = cfg.build()
    model.to_empty(device="cpu")
    torch.manual_seed(seed)
    model.init_states(buffer_device=torch.device("cpu"))
    return model


def _tokens(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (BATCH, SEQ), generator=g), torch.randint(0, VOCAB, (BATCH, SEQ), generator=g)


def _loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), labels.flatten())


def _perturb(model) -> None:
    """Move β (and α) off their init, the same on every rank, so the dynamic gain takes part."""
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, SeeDNorm):
                m.beta.copy_(0.05 * torch.randn(m.beta.shape, generator=g))
                m.alpha.copy_(1 + 0.1 * torch.randn(m.alpha.shape, generator=g))


# ------------------------------------------------------------------------------------------------------------
# One process


def test_converter_equals_rmsnorm_at_init_and_beta_moves_after_a_step():
    plain, converted = _build(_config(None)), _build(_config(SeeDNormConverter.Config(alpha_init=0.5)))
    converted.verify_module_protocol()
    norms = [m for m in converted.modules() if isinstance(m, SeeDNorm)]
    assert len(norms) == 4 and not isinstance(converted.norm, SeeDNorm)  # pre-norms only by default
    for m in norms:
        assert torch.equal(m.weight, torch.ones(256)) and torch.equal(m.alpha, torch.full((256,), 0.5))
        assert torch.equal(m.beta, torch.zeros(256))
    tokens, labels = _tokens()
    torch.testing.assert_close(converted(tokens), plain(tokens), rtol=1e-5, atol=1e-5)

    optimizer = seednorm_adamw(lr=1e-3, implementation="for-loop").build(model_parts=[converted])
    _loss(converted(tokens), labels).backward()
    optimizer.step()
    for m in norms:
        assert m.beta.abs().min() > 0  # dβ ∝ α ≠ 0 at β = 0: training leaves RMSNorm at once


def test_optimizer_groups_decay_as_param_groups():
    """torchtitan's optimizer built from ``seednorm_adamw`` decays exactly what ``seednorm.param_groups`` decays."""
    model = _build(_config(SeeDNormConverter.Config(final_norm=True)))
    optimizers = seednorm_adamw(lr=1e-3, weight_decay=0.1, implementation="for-loop").build(model_parts=[model])
    assert isinstance(optimizers, OptimizersContainer)
    got = {id(p): g["weight_decay"] for opt in optimizers for g in opt.param_groups for p in g["params"]}
    want = {id(p): g["weight_decay"] for g in seednorm.param_groups(model, 0.1) for p in g["params"]}
    assert got == want
    assert got[id(model.norm.alpha)] == 0.1 and got[id(model.norm.weight)] == 0.0


def test_converter_sites_and_errors():
    cfg = _config(SeeDNormConverter.Config(final_norm=True))
    assert isinstance(cfg.norm, SeeDNorm.Config) and isinstance(cfg.layers[1].ffn_norm, SeeDNorm.Config)
    qwen = qwen3_registry("debugmodel", converters=[SeeDNormConverter.Config(pre_norms=False, qk_norm=True)]).model
    assert isinstance(qwen.layers[0].attention.qk_norm, SeeDNorm.Config)
    assert not isinstance(qwen.layers[0].attention_norm, SeeDNorm.Config)
    with pytest.raises(ValueError, match=r"'qk_norm'.*sites are"):
        _config(SeeDNormConverter.Config(qk_norm=True))  # Llama3 has no QK-norm
    with pytest.raises(ValueError, match=r"layers\.0\.attention_norm.*num_heads=3 does not divide"):
        _config(SeeDNormConverter.Config(num_heads=3))
    with pytest.raises(ValueError, match="alpha_init=0"):
        SeeDNormConverter.Config(alpha_init=0.0).build()
    with pytest.raises(ValueError, match="no norm site"):
        SeeDNormConverter.Config(pre_norms=False).build()


def test_converter_refuses_sigma_nonzero_at_zero_unless_told_by_the_conversion_rule():
    """sigmoid (σ(0) = ½) would make the converted model differ from the RMSNorm one at init: refused with
    ``convert_to_seednorm``'s message and option, and accepted (gain γ + α/2) when that option says so."""
    with pytest.raises(ValueError) as refused:
        SeeDNormConverter.Config(activation="sigmoid").build()
    with pytest.raises(ValueError) as by_convert:
        seednorm.convert_to_seednorm(torch.nn.Sequential(torch.nn.RMSNorm(8)), activation="sigmoid")
    assert str(refused.value) == str(by_convert.value) and "allow_unequal_init=True" in str(refused.value)
    plain = _build(_config(None))
    converted = _build(_config(SeeDNormConverter.Config(activation="sigmoid", allow_unequal_init=True)))
    norms = [m for m in converted.modules() if isinstance(m, SeeDNorm)]
    assert len(norms) == 4 and all(m.activation == "sigmoid" for m in norms)
    tokens, _ = _tokens()
    assert not torch.allclose(converted(tokens), plain(tokens), rtol=1e-3, atol=1e-3)


# ------------------------------------------------------------------------------------------------------------
# Two processes: FSDP2, TP + SP, torch.compile, DCP


def _reference(cfg, tokens, labels):
    model = _build(cfg)
    _perturb(model)
    loss = _loss(model(tokens), labels)
    loss.backward()
    return model, loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def _full(t: torch.Tensor) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t


def _check_grads(model, ref_grads, what: str) -> None:
    from torchtitan.components.checkpointer.utils import canonical_fqn

    for name, p in model.named_parameters():
        name = canonical_fqn(name)
        torch.testing.assert_close(_full(p.grad), ref_grads[name], rtol=1e-4, atol=1e-5, msg=f"{what}: {name}")


def _phase_fsdp(rank, world_size, cfg, tokens, labels, ref_loss, ref_grads, tmp):
    from torch.distributed.checkpoint import FileSystemReader, FileSystemWriter, load, save
    from torch.distributed.fsdp import fully_shard

    model = _build(cfg)
    _perturb(model)
    for layer in model.layers.values():
        fully_shard(layer)
    fully_shard(model)
    rows = slice(rank * BATCH // world_size, (rank + 1) * BATCH // world_size)
    loss = _loss(model(tokens[rows]), labels[rows])
    loss.backward()  # FSDP averages gradients over ranks: the gradient of the mean loss over the whole batch
    dist.all_reduce(loss := loss.detach(), op=dist.ReduceOp.AVG)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    _check_grads(model, ref_grads, "FSDP2")

    # DCP round trip of the sharded state: a fresh model (α = 1, β = 0) gets α, β back
    state = model.state_dict()
    save(state, storage_writer=FileSystemWriter(tmp))
    fresh = _build(cfg, seed=5)
    for layer in fresh.layers.values():
        fully_shard(layer)
    fully_shard(fresh)
    restored = fresh.state_dict()
    key = "layers.0.attention_norm.beta"
    assert not torch.equal(_full(restored[key]), _full(state[key]))
    load(restored, storage_reader=FileSystemReader(tmp))
    for key in state:
        if key.endswith((".alpha", ".beta")):
            assert torch.equal(_full(restored[key]), _full(state[key])), key
    assert any(key.endswith(".beta") for key in state)


def _phase_tp_sp(rank, world_size, cfg_fn, tokens, labels, ref_loss, ref_grads):
    import torchtitan.distributed.parallel_dims as parallel_dims
    from torch.distributed.tensor import DTensor, Replicate, Shard
    from torchtitan.distributed import ParallelDims
    from torchtitan.models.llama3.sharding import set_llama3_sharding_config

    parallel_dims.device_type = "cpu"  # torchtitan picks "cuda" when no accelerator is found

    cfg = cfg_fn()
    set_llama3_sharding_config(cfg, enable_sp=True)  # torchtitan's Llama3 TP plan, with sequence parallel
    dims = ParallelDims(dp_replicate=1, dp_shard=1, cp=1, tp=world_size, pp=1, ep=1, world_size=world_size,
                        spmd_backend="partial_dtensor")
    dims.build_mesh()
    model = _build(cfg)
    _perturb(model)
    model.parallelize(dims)
    norm = model.layers["0"].attention_norm
    assert all(p.placements == (Replicate(),) for p in (norm.weight, norm.alpha, norm.beta))

    seen = []
    handle = norm.register_forward_hook(lambda m, args, out: seen.append((args[0].placements, out.placements)))
    loss = _loss(_full(model(tokens)), labels)
    loss.backward()
    handle.remove()
    # sequence parallel: the norm's input and output are sharded on the sequence dim, the op ran on local rows
    assert seen[0] == ((Shard(1),), (Shard(1),)), seen
    torch.testing.assert_close(loss.detach(), ref_loss, rtol=1e-5, atol=1e-6)
    _check_grads(model, ref_grads, "TP+SP")

    # torch.compile of a parallelized block: one graph, no break at the op, same output and gradients
    from torch._dynamo.utils import counters

    block = model.layers["1"]
    x = torch.randn(BATCH, SEQ, 256, generator=torch.Generator().manual_seed(3))
    def run(fn):
        xs = DTensor.from_local(x.chunk(world_size, 1)[rank].clone(), dims.get_mesh("tp"), [Shard(1)]).requires_grad_()
        out = fn(xs, None, None)
        _full(out).square().sum().backward()
        return _full(out).detach(), _full(xs.grad)

    counters.clear()
    out_c, dx_c = run(torch.compile(block, backend="aot_eager", fullgraph=True))  # fullgraph: a break is an error
    assert counters["stats"]["unique_graphs"] >= 1 and not counters["graph_break"], dict(counters["graph_break"])
    out_e, dx_e = run(block)
    torch.testing.assert_close(out_c, out_e, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dx_c, dx_e, rtol=1e-5, atol=1e-5)


def _converted():
    return _config(SeeDNormConverter.Config(final_norm=True))


def _all_phases(rank: int, world_size: int, out_dir: str) -> None:
    cfg = _converted()
    tokens, labels = _tokens()
    _ref_model, ref_loss, ref_grads = _reference(cfg, tokens, labels)
    phases = {
        "fsdp_dcp": lambda: _phase_fsdp(rank, world_size, _converted(), tokens, labels, ref_loss, ref_grads,
                                        os.path.join(out_dir, "dcp")),
        "tp_sp_compile": lambda: _phase_tp_sp(rank, world_size, _converted, tokens, labels, ref_loss, ref_grads),
    }
    run_phases(rank, phases, out_dir)


@pytest.fixture(scope="module")
def two_ranks():
    return phase_results(_all_phases)


def test_fsdp2_equals_one_process_and_dcp_keeps_alpha_beta(two_ranks):
    assert_phase(two_ranks, "fsdp_dcp")


def test_tp_sequence_parallel_equals_one_process_and_compiles_without_break(two_ranks):
    assert_phase(two_ranks, "tp_sp_compile")
