"""The practical's own test cells, and every registered model's basic contract."""
import numpy as np
import pytest
import torch

from reportgen.models import MODELS, PreActResNetBlock, ResNet, build_model, check_model

device = torch.device("cpu")


def test_notebook_block_cell():
    # The notebook's "Testing the ResNet block" cell, unchanged.
    c_in = np.random.randint(low=16, high=64)
    module = PreActResNetBlock(c_in=c_in, subsample=False)
    module.to(device)
    img = torch.randn(4, c_in, 32, 32, device=device)
    out = module(img)
    for i in range(len(img.shape)):
        assert out.shape[i] == img.shape[i], f'Disagreement in shapes: output={out.shape}, input={img.shape}'

    c_out = np.random.randint(low=16, high=64)
    module = PreActResNetBlock(c_in=c_in, subsample=True, c_out=c_out)
    module.to(device)
    img = torch.randn(4, c_in, 32, 32, device=device)
    out = module(img)
    assert out.shape[1] == c_out
    assert out.shape[2] == img.shape[2]//2
    assert out.shape[3] == img.shape[3]//2


def test_notebook_resnet_cell():
    # The notebook's "Testing the ResNet" cell, unchanged.
    num_classes = np.random.randint(low=5, high=20)
    model = ResNet(num_classes=num_classes)
    model.to(device)
    img = torch.randn(4, 3, 32, 32, device=device)
    out = model(img)
    assert len(out.shape) == 2
    assert out.shape[0] == img.shape[0]
    assert out.shape[1] == num_classes


def test_preact_block_structure():
    """BN-ReLU-conv twice; the subsampling shortcut is a 1x1 stride-2 convolution."""
    b = PreActResNetBlock(16, subsample=True, c_out=32)
    kinds = [type(m).__name__ for m in b.net]
    assert kinds == ["BatchNorm2d", "ReLU", "Conv2d", "BatchNorm2d", "ReLU", "Conv2d"]
    conv = b.downsample[-1]
    assert conv.kernel_size == (1, 1) and conv.stride == (2, 2)
    assert PreActResNetBlock(16).downsample is None


def test_practical_resnet_parameter_count_and_init():
    m = ResNet(num_classes=10, num_blocks=[2, 2, 3], c_hidden=[16, 24, 32])
    # 7 blocks; subsampling in the first block of groups 2 and 3.
    assert len(m.blocks) == 7
    assert [b.downsample is not None for b in m.blocks] == [False, False, True, False, True,
                                                             False, False]
    conv = m.blocks[0].net[2]
    # Kaiming fan-out: std = sqrt(2 / (c_out * k * k)).
    expected = (2 / (16 * 9)) ** 0.5
    assert abs(conv.weight.std().item() - expected) / expected < 0.15


def test_architecture_tables_are_typeset_as_the_report_prints_them():
    """Table 1's rows, in the report's typography: "×" for shapes and repeats, "→" for a
    linear layer, thousands separated ("16 x 32 x 32" and "3x3 conv" stood under a caption
    that says "channels × height × width")."""
    from reportgen.models import architecture_table

    rows = architecture_table(build_model("preact_resnet"))
    assert [(r["stage"], r["layers"], r["output"]) for r in rows[:3]] == [
        ("Stem", "3×3 conv", "16 × 32 × 32"),
        ("Group 1", "2 × pre-activation block, 16 ch", "16 × 32 × 32"),
        ("Group 2", "2 × pre-activation block, 24 ch (first subsamples)", "24 × 16 × 16")]
    assert sum(r["parameters"] for r in rows) == 83_946
    p4 = architecture_table(build_model("p4_preact_resnet"))
    assert p4[1]["layers"] == "2 × p4 pre-activation block, 8 ch × 4 rotations"
    assert p4[1]["output"] == "8 × 4 × 32 × 32"
    mlp = architecture_table(build_model("mlp", hidden=[128], activation="relu"))
    assert [r["layers"] for r in mlp] == ["linear 3,072 → 128, ReLU", "linear 128 → 10"]


@pytest.mark.parametrize("name", sorted(n for n, m in MODELS.items() if m.convolutional))
def test_the_tables_caption_names_every_axis_of_a_stages_output(name):
    from reportgen.models import architecture_table

    axes = MODELS[name].axes.split(" × ")
    rows = architecture_table(build_model(name))
    assert all(len(r["output"].split(" × ")) == len(axes) for r in rows[:-1]), rows  # the head: logits


@pytest.mark.parametrize("name", sorted(MODELS))
def test_registered_model_contract(name):
    torch.manual_seed(0)
    model = build_model(name, num_classes=7)
    x = torch.randn(3, 3, 32, 32)
    out = model(x)
    assert out.shape == (3, 7)
    assert torch.isfinite(out).all()
    out.sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert not missing, f"parameters without gradient: {missing}"


def test_unknown_model_name_lists_known():
    with pytest.raises(ValueError, match="unknown model 'resnet50'.*mlp.*preact_resnet"):
        check_model("resnet50", {})


def test_inconsistent_resnet_settings():
    with pytest.raises(ValueError, match="num_blocks has 3 groups but model.params.c_hidden has 2"):
        check_model("preact_resnet", {"num_blocks": [2, 2, 3], "c_hidden": [16, 24]})
    with pytest.raises(ValueError, match="no setting 'depth'"):
        check_model("preact_resnet", {"depth": 3})
    with pytest.raises(ValueError, match="positive"):
        check_model("resnet", {"num_blocks": [2, 0], "c_hidden": [16, 24]})


def test_channels_last_only_for_safe_channel_counts():
    from reportgen.models import prefers_channels_last

    assert prefers_channels_last("preact_resnet", {"c_hidden": [16, 24, 32]})
    assert not prefers_channels_last("preact_resnet", {"c_hidden": [4, 8]})  # oneDNN bug
    assert not prefers_channels_last("mlp", {"hidden": [128]})


def test_fold_batchnorm_keeps_the_function():
    from reportgen.models import fold_batchnorm

    torch.manual_seed(0)
    m = ResNet(num_classes=10, num_blocks=[1, 1], c_hidden=[8, 16])
    x = torch.randn(16, 3, 32, 32)
    for _ in range(3):  # non-trivial running statistics
        m(x)
    m.eval()
    folded = fold_batchnorm(m)
    n_bn = sum(isinstance(k, torch.nn.BatchNorm2d) for k in m.modules())
    n_bn_folded = sum(isinstance(k, torch.nn.BatchNorm2d) for k in folded.modules())
    assert n_bn_folded == n_bn - 2  # one BN per block follows a convolution
    with torch.no_grad():
        assert torch.allclose(folded(x), m(x), atol=1e-5)
    assert any(isinstance(k, torch.nn.BatchNorm2d) for k in m.modules())  # original untouched


def test_builder_defaults_are_the_practicals():
    from reportgen.models import with_defaults

    for name in ("preact_resnet", "resnet"):
        d = with_defaults(name, {})
        assert list(d["num_blocks"]) == [2, 2, 3] and list(d["c_hidden"]) == [16, 24, 32]
    assert sum(p.numel() for p in build_model("preact_resnet").parameters()) == 83_946


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_describes_itself(name):
    from reportgen.references import REFERENCES

    entry = MODELS[name]
    assert entry.label and entry.title and entry.description and entry.details
    assert all(key in REFERENCES for key in entry.cite)


def test_a_model_registers_where_it_is_defined():
    from torch import nn

    from reportgen.models import register_model
    from reportgen.models.registry import MODELS as registry

    @register_model("tiny_linear_test", label="lin", title="Linear", description="linear model",
                    details="One linear layer.")
    def tiny_linear(num_classes: int = 10) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, num_classes))

    try:
        assert build_model("tiny_linear_test")(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
        with pytest.raises(ValueError, match="has no setting 'depth'"):
            check_model("tiny_linear_test", {"depth": 3})
    finally:
        registry.pop("tiny_linear_test")
