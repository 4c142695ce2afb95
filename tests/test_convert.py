"""convert_to_seednorm on plain PyTorch models: exact outputs (float64), what is kept, selection and errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from seednorm import AdaSeeDNorm, SeeDNorm, SeeDNorm2d, convert_to_seednorm
from seednorm import LayerNorm as SNLayerNorm
from seednorm import RMSNorm as SNRMSNorm
from seednorm.convert import layer_options, rebuild_seednorms


class T5StyleNorm(nn.Module):
    """An RMSNorm written by hand, as many codebases do (name and attributes unlike torch's)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.variance_epsilon = eps

    def forward(self, x):
        return self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)


class OffsetNorm(nn.Module):
    """Gemma-style: gain 1 + weight, epsilon under another attribute name."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(dim))
        self.epsilon = 1e-5

    def forward(self, x):
        return (1 + self.weight) * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.epsilon)


class ScaleNorm(nn.Module):
    """A norm SeeDNorm cannot reproduce: a scalar gain over the L2 norm."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1))
        self.eps = 1e-5

    def forward(self, x):
        return self.weight * x / (x.norm(dim=-1, keepdim=True) + self.eps)


class Block(nn.Module):
    def __init__(self, norm: nn.Module, dim: int = 16) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, dim)
        self.norm = norm

    def forward(self, x):
        return self.norm(self.proj(x)) + x


SOURCES = {
    "rmsnorm": lambda d: nn.RMSNorm(d, eps=1e-6),
    "rmsnorm_eps_none": lambda d: nn.RMSNorm(d),
    "rmsnorm_no_affine": lambda d: nn.RMSNorm(d, eps=1e-6, elementwise_affine=False),
    "layernorm": lambda d: nn.LayerNorm(d),
    "layernorm_no_bias": lambda d: nn.LayerNorm(d, bias=False),
    "layernorm_no_affine": lambda d: nn.LayerNorm(d, elementwise_affine=False),
    "seednorm_rmsnorm": lambda d: SNRMSNorm(d, eps=1e-5),
    "seednorm_layernorm": lambda d: SNLayerNorm(d),
    "t5_style": lambda d: T5StyleNorm(d),
    "gemma_offset": lambda d: OffsetNorm(d),
}


def _randomize(model: nn.Module) -> nn.Module:
    """Trained-looking parameters: gains away from 1, non-zero biases."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    return model


def _inputs(dim: int, dtype=torch.float64) -> torch.Tensor:
    """Rows with non-zero mean and very different scales (tiny ones, where ε matters)."""
    scales = torch.tensor([1e-4, 1e-2, 1.0, 30.0], dtype=dtype).view(4, 1, 1)
    return (torch.randn(4, 5, dim, dtype=dtype) + 0.7) * scales


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_conversion_is_exact(source):
    dim = 16
    model = _randomize(nn.Sequential(Block(SOURCES[source](dim)), Block(SOURCES[source](dim)))).double()
    x = _inputs(dim)
    expected = model(x)
    assert convert_to_seednorm(model) is model
    assert all(isinstance(block.norm, SeeDNorm) for block in model)
    torch.testing.assert_close(model(x), expected, rtol=1e-12, atol=1e-12)


def test_layernorm_becomes_centering_seednorm_with_its_bias():
    ln = _randomize(nn.LayerNorm(8, eps=1e-3)).double()
    new = convert_to_seednorm(Block(ln, 8)).norm
    assert new.center and new.eps == 1e-3
    assert torch.equal(new.weight, ln.weight) and torch.equal(new.bias, ln.bias)
    assert not convert_to_seednorm(Block(nn.RMSNorm(8), 8)).norm.center


def test_gemma_offset_is_folded_into_gamma():
    norm = _randomize(OffsetNorm(8))
    new = convert_to_seednorm(Block(norm, 8)).norm
    torch.testing.assert_close(new.weight, 1 + norm.weight)


def test_parameters_names_dtype_device_and_mode_are_kept():
    model = Block(_randomize(nn.RMSNorm(16, eps=1e-6)).to(torch.bfloat16)).eval()
    model.norm.weight.requires_grad_(False)
    keys = set(model.state_dict())
    convert_to_seednorm(model, num_heads=4, alpha_init=0.5)
    new = model.norm
    assert set(model.state_dict()) == keys | {"norm.alpha", "norm.beta"}
    assert new.weight.dtype == new.alpha.dtype == new.beta.dtype == torch.bfloat16
    assert new.eps == 1e-6 and new.num_heads == 4 and not new.training
    assert not new.weight.requires_grad
    assert torch.equal(new.beta, torch.zeros(16, dtype=torch.bfloat16))
    assert torch.equal(new.alpha, torch.full((16,), 0.5, dtype=torch.bfloat16))


def test_meta_device_model_converts_without_data():
    with torch.device("meta"):
        model = nn.Sequential(Block(T5StyleNorm(16)), Block(nn.LayerNorm(16)))
    convert_to_seednorm(model)
    assert model[0].norm.weight.is_meta and not model[0].norm.center
    assert model[1].norm.bias.is_meta and model[1].norm.center


def test_shared_norm_is_replaced_everywhere_by_one_module():
    norm = nn.RMSNorm(8)
    model = nn.ModuleDict({"a": Block(norm, 8), "b": Block(norm, 8)})
    convert_to_seednorm(model)
    assert isinstance(model["a"].norm, SeeDNorm) and model["a"].norm is model["b"].norm


def test_a_norm_itself_returns_its_replacement():
    ln = _randomize(nn.LayerNorm(8)).double()
    x = _inputs(8)
    new = convert_to_seednorm(ln)
    assert isinstance(new, SeeDNorm)
    torch.testing.assert_close(new(x), ln(x), rtol=1e-12, atol=1e-12)


def test_include_and_exclude_select_by_fnmatch_on_module_names():
    def model():
        layers = nn.ModuleList([Block(nn.RMSNorm(8), 8) for _ in range(2)])
        return nn.ModuleDict({"layers": layers, "final": nn.RMSNorm(8)})

    def converted(m):
        return sorted(n for n, x in m.named_modules() if isinstance(x, SeeDNorm))

    assert converted(convert_to_seednorm(model(), include="layers.*")) == ["layers.0.norm", "layers.1.norm"]
    assert converted(convert_to_seednorm(model(), exclude=["*.1.*", "final"])) == ["layers.0.norm"]
    assert converted(convert_to_seednorm(model(), include="*norm", exclude="layers.0.*")) == ["layers.1.norm"]


def test_forced_center_false_gives_the_papers_rms_form():
    new = convert_to_seednorm(Block(nn.LayerNorm(8), 8), center=False).norm
    assert not new.center and new.bias is not None


def test_one_optimizer_step_moves_beta():
    model = convert_to_seednorm(_randomize(Block(nn.LayerNorm(16))))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(torch.randn(4, 16)).pow(2).mean().backward()
    opt.step()
    assert (model.norm.beta != 0).all()


def test_no_norms_is_an_error():
    with pytest.raises(ValueError, match="no normalization layers found in Sequential"):
        convert_to_seednorm(nn.Sequential(nn.Linear(4, 4), nn.ReLU()))
    with pytest.raises(ValueError, match="include='nothing"):
        convert_to_seednorm(Block(nn.RMSNorm(16)), include="nothing*")


def test_converting_twice_says_it_is_converted_already():
    model = convert_to_seednorm(Block(nn.RMSNorm(16)))
    with pytest.raises(ValueError, match="1 module\\(s\\) are SeeDNorm already"):
        convert_to_seednorm(model)
    assert isinstance(Block(AdaSeeDNorm(16)).norm, AdaSeeDNorm)


@pytest.mark.parametrize(
    ("norm", "why"),
    [
        (nn.BatchNorm1d(16), r"batchnorm\.BatchNorm1d\): calling it on a \(2, 3, 16\) input failed"),
        (nn.GroupNorm(1, 16), r"GroupNorm\): calling it"),
        (ScaleNorm(16), r"test_convert\.ScaleNorm\): its output matches no SeeDNorm form"),
        (nn.LayerNorm((4, 4)), r"LayerNorm\): its weight is not a 1-D tensor \(got \(4, 4\)\)"),
    ],
)
def test_unsupported_norm_names_module_path_and_class(norm, why):
    model = nn.Sequential(Block(nn.RMSNorm(16)), nn.Sequential(nn.Linear(16, 16), norm))
    with pytest.raises(TypeError, match=r"'1\.1' \(.*" + why) as err:
        convert_to_seednorm(model)
    assert "exclude=" in str(err.value)
    assert isinstance(model[0].norm, nn.RMSNorm)  # nothing was replaced
    convert_to_seednorm(model, exclude="1.1")  # leaving it out works
    assert isinstance(model[0].norm, SeeDNorm) and model[1][1] is norm


class ChannelsFirstLayerNorm(nn.LayerNorm):
    """timm-style LayerNorm2d: normalizes over the channels of NCHW input."""

    def forward(self, x):
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ChannelsFirstRMSNorm(nn.Module):
    """timm-style RmsNorm2d: reduces over dim 1 directly, γ reshaped to (1, C, 1, 1)."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(1, keepdim=True) + self.eps) * self.weight.view(1, -1, 1, 1)


class ConvBlock(nn.Module):
    def __init__(self, norm: nn.Module, dim: int = 16) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)
        self.norm = norm

    def forward(self, x):
        return self.norm(self.conv(x)) + x


@pytest.mark.parametrize(("source", "center"), [(ChannelsFirstLayerNorm(16, eps=1e-6), True),
                                                (ChannelsFirstRMSNorm(16), False)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_channels_first_norms_convert_exactly_to_seednorm2d(source, center, dtype):
    model = ConvBlock(source).to(dtype).eval()
    with torch.no_grad():
        for p in model.norm.parameters():
            p.normal_(0.5, 0.5)
    x = torch.randn(2, 16, 5, 3, dtype=dtype) * 3 + 1
    with torch.no_grad():
        expected = model(x)
    convert_to_seednorm(model, num_heads=4)
    assert type(model.norm) is SeeDNorm2d and model.norm.center is center and model.norm.num_heads == 4
    assert model.norm.eps == source.eps and model.norm.weight.dtype == dtype
    with torch.no_grad():
        tol = 1e-12 if dtype == torch.float64 else 1e-5
        torch.testing.assert_close(model(x), expected, rtol=tol, atol=tol)
    options = {"norm": layer_options(model.norm)}
    rebuilt = rebuild_seednorms(ConvBlock(type(source)(16)), options)
    assert type(rebuilt.norm) is SeeDNorm2d and layer_options(rebuilt.norm) == options["norm"]


@pytest.mark.parametrize("norm", [nn.BatchNorm2d(16), nn.GroupNorm(2, 16), nn.InstanceNorm2d(16, affine=True)])
def test_channel_norms_over_more_than_one_position_are_refused(norm):
    with pytest.raises(TypeError, match=r"as a channels-first norm \(N, C, \*spatial\): its output matches no"):
        convert_to_seednorm(ConvBlock(norm))


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_heads=3 does not divide the width 16 of 'norm'"):
        convert_to_seednorm(Block(nn.RMSNorm(16)), num_heads=3)
    with pytest.raises(ValueError, match="num_heads must be a positive integer, got 0"):
        convert_to_seednorm(Block(nn.RMSNorm(16)), num_heads=0)
    with pytest.raises(ValueError, match="alpha_init=0"):
        convert_to_seednorm(Block(nn.RMSNorm(16)), alpha_init=0.0)
    with pytest.raises(TypeError, match="expects an nn.Module"):
        convert_to_seednorm("model")
    with pytest.raises(TypeError, match="include must be"):
        convert_to_seednorm(Block(nn.RMSNorm(16)), include=[1])
    with pytest.raises(TypeError, match="center must be"):
        convert_to_seednorm(Block(nn.RMSNorm(16)), center="yes")


def test_frozen_model_stays_frozen():
    model = nn.Sequential(
        Block(nn.RMSNorm(16)), Block(nn.LayerNorm(16)), Block(nn.LayerNorm(16, elementwise_affine=False))
    )
    model.requires_grad_(False)
    convert_to_seednorm(model)
    frozen = [n for n, p in model.named_parameters() if p.requires_grad]
    assert not frozen, f"{frozen} became trainable"
    trainable = convert_to_seednorm(Block(nn.LayerNorm(16, elementwise_affine=False)))
    assert all(p.requires_grad for p in trainable.norm.parameters())


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_scripted_models_are_refused_as_torchscript():
    with pytest.raises(TypeError, match="is a TorchScript module.*convert the eager model, then script it"):
        convert_to_seednorm(torch.jit.script(Block(nn.LayerNorm(16))))
    model = nn.Sequential(Block(nn.RMSNorm(16)), torch.jit.script(Block(nn.LayerNorm(16))))
    with pytest.raises(TypeError, match=r"'1\.norm' \(LayerNorm\): it is a TorchScript module"):
        convert_to_seednorm(model)
    assert isinstance(model[0].norm, nn.RMSNorm)  # nothing was replaced


def test_exclude_on_any_name_of_a_shared_norm_leaves_it():
    norm = nn.RMSNorm(8)
    model = nn.ModuleDict({"a": Block(norm, 8), "b": Block(norm, 8), "c": Block(nn.RMSNorm(8), 8)})
    convert_to_seednorm(model, exclude="b.norm")
    assert model["a"].norm is norm and model["b"].norm is norm
    assert isinstance(model["c"].norm, SeeDNorm)
    model = nn.ModuleDict({"a": Block(norm, 8), "b": Block(norm, 8)})
    convert_to_seednorm(model, include="b.*")  # any name selects it, and it is replaced under every name
    assert isinstance(model["a"].norm, SeeDNorm) and model["a"].norm is model["b"].norm


def test_dynamic_options_are_set_and_keep_the_function():
    model = _randomize(nn.Sequential(Block(nn.RMSNorm(16, eps=1e-6)), Block(nn.LayerNorm(16)))).double().eval()
    x = _inputs(16)
    expected = model(x)
    convert_to_seednorm(model, num_heads=4, activation="softsign", dot_scale="dim", dynamic_dropout=0.1)
    torch.testing.assert_close(model(x), expected, rtol=1e-12, atol=1e-12)
    assert all((b.norm.activation, b.norm.dot_scale, b.norm.dynamic_dropout) == ("softsign", "dim", 0.1) for b in model)
    with pytest.raises(ValueError, match=r"activation='sigmoid' has σ\(0\) ≠ 0.*allow_unequal_init=True"):
        convert_to_seednorm(Block(nn.RMSNorm(16)), activation="sigmoid")
    told = _randomize(Block(nn.RMSNorm(16, eps=1e-6))).double().eval()
    gamma = told.norm.weight.detach().clone()
    convert_to_seednorm(told, activation="sigmoid", allow_unequal_init=True)  # the gain is γ + α/2 at init
    assert told.norm.activation == "sigmoid"
    expected = nn.functional.rms_norm(told.proj(x), (16,), gamma + 0.5, 1e-6) + x
    torch.testing.assert_close(told(x), expected, rtol=1e-12, atol=1e-12)
    with pytest.raises(TypeError, match="allow_unequal_init must be True or False"):
        convert_to_seednorm(Block(nn.RMSNorm(16)), allow_unequal_init="yes")
    with pytest.raises(ValueError, match="dot_scale must be a number or 'dim'"):
        convert_to_seednorm(Block(nn.RMSNorm(16)), dot_scale="sqrt")


def test_layer_options_rebuild_the_layer():
    import inspect

    from seednorm.convert import layer_options

    layer = SeeDNorm(
        12,
        num_heads=3,
        eps=1e-5,
        alpha_init=0.5,
        activation="hardtanh",
        dynamic_dropout=0.2,
        dot_scale=0.25,
        center=True,
        bias=True,
    )
    options = layer_options(layer)
    # every constructor option that shapes the function is recorded; device, dtype and the kernel choice are not
    signature = set(inspect.signature(SeeDNorm).parameters) - {"device", "dtype", "impl"}
    assert set(options) == signature
    assert layer_options(SeeDNorm(**options)) == options


def test_rebuild_seednorms_puts_recorded_layers_in_place_or_names_what_does_not_fit():
    from seednorm.convert import layer_options, rebuild_seednorms

    source = convert_to_seednorm(
        nn.ModuleDict({"a": Block(nn.LayerNorm(8), 8), "b": Block(nn.RMSNorm(8), 8)}), num_heads=2, dot_scale=0.5
    )
    record = {name: layer_options(m) for name, m in source.named_modules() if isinstance(m, SeeDNorm)}
    fresh = nn.ModuleDict({"a": Block(nn.LayerNorm(8), 8), "b": Block(nn.RMSNorm(8), 8)})
    rebuild_seednorms(fresh, record)
    assert {n: layer_options(m) for n, m in fresh.named_modules() if isinstance(m, SeeDNorm)} == record
    for path, why in [
        ("a.nope", "has no module of that name"),
        (
            "a.proj",
            r"\(torch.nn.modules.linear.Linear\) is "
            "not a norm layer",
        ),
        ("a.norm", "has width 8, the record says 6"),
    ]:
        options = dict(record["a.norm"], normalized_shape=6 if path == "a.norm" else 8)
        with pytest.raises(ValueError, match=f"'{path}'.*{why}"):
            rebuild_seednorms(nn.ModuleDict({"a": Block(nn.LayerNorm(8), 8)}), {path: options})
    with pytest.raises(ValueError, match="'a.norm': the recorded options .* are invalid: num_heads=3"):
        rebuild_seednorms(
            nn.ModuleDict({"a": Block(nn.LayerNorm(8), 8)}), {"a.norm": dict(record["a.norm"], num_heads=3)}
        )


class GainlessSeeDNorm(SeeDNorm):
    """A SeeDNorm subclass whose layers have no γ (gamma_mode="none")."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, gamma_mode="none", **kwargs)


@pytest.mark.parametrize("source", [nn.RMSNorm(8), nn.RMSNorm(8, elementwise_affine=False), nn.LayerNorm(8)],
                         ids=["rmsnorm", "no-gain", "layernorm"])
def test_layer_class_without_gamma_is_refused_and_nothing_is_replaced(source):
    """γ ≡ 0 holds no gain, not even the implicit γ = 1 of a norm without one: one error naming class and layer."""
    model = Block(source, 8)
    with pytest.raises(TypeError, match=r"GainlessSeeDNorm builds layers without γ \(gamma_mode='none'\).*'norm'"):
        convert_to_seednorm(model, layer_class=GainlessSeeDNorm)
    assert model.norm is source
