"""The p4-equivariant ResNet (Cohen & Welling 2016): exact invariance of the logits to 90°
turns, equivariance of every layer (rotate the maps, shift the rotation axis), and
test-time rotation averaging for any model."""
import pytest
import torch

from reportgen.models import build_model, count_parameters
from reportgen.models.p4 import GroupAvgPool, GroupConv, LiftingConv


def rot(x, k=1):
    return torch.rot90(x, k, dims=(-2, -1))


def transformed(features, k=1):
    """What a 90°*k turn of the input does to p4 feature maps: turn every map, shift the
    rotation axis by k."""
    return torch.roll(rot(features, k), k, dims=2)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return build_model("p4_preact_resnet", c_hidden=[4, 6, 8]).double()


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_fresh_model_logits_are_invariant_to_90_degree_turns(model, mode):
    getattr(model, mode)()
    x = torch.randn(4, 3, 32, 32, dtype=torch.double)
    with torch.no_grad():
        y = model(x)
        for k in (1, 2, 3):
            assert torch.allclose(model(rot(x, k)), y, atol=1e-10, rtol=0), k


def test_intermediate_features_rotate_and_shift(model):
    model.eval()
    x = torch.randn(2, 3, 32, 32, dtype=torch.double)
    with torch.no_grad():
        f = model.features(x)
        assert f.shape[2] == 4 and f.shape[-1] == 8  # 32 -> 16 -> 8, four rotations
        for k in (1, 2, 3):
            assert torch.allclose(model.features(rot(x, k)), transformed(f, k), atol=1e-10)
        # Not invariant in the middle: the maps themselves change, only predictably.
        assert not torch.allclose(model.features(rot(x)), f, atol=1e-3)


def test_each_layer_is_equivariant():
    torch.manual_seed(1)
    x = torch.randn(2, 3, 16, 16, dtype=torch.double)
    lift = LiftingConv(3, 5).double()
    assert torch.allclose(lift(rot(x)), transformed(lift(x)), atol=1e-12)
    g = torch.randn(2, 5, 4, 16, 16, dtype=torch.double)
    for conv in (GroupConv(5, 6).double(), GroupConv(5, 6, kernel_size=1).double()):
        assert torch.allclose(conv(transformed(g)), transformed(conv(g)), atol=1e-12)
    pool = GroupAvgPool()
    assert torch.allclose(pool(transformed(g)), transformed(pool(g)), atol=1e-12)


def _direct_bank(w: torch.Tensor) -> torch.Tensor:
    """The filter bank built the direct way: per output rotation r, rotate every filter by r
    (and, for a group convolution, move input rotation s to s + r)."""
    if w.dim() == 4:  # lifting
        return torch.stack([torch.rot90(w, r, dims=(-2, -1)) for r in range(4)], dim=1)
    return torch.stack([torch.rot90(torch.roll(w, r, dims=2), r, dims=(-2, -1))
                        for r in range(4)], dim=1)


@pytest.mark.parametrize("conv", [LiftingConv(3, 5), GroupConv(5, 6),
                                  GroupConv(5, 6, kernel_size=1), GroupConv(2, 3, kernel_size=5)],
                         ids=["lifting", "group3", "group1", "group5"])
def test_filter_bank_is_one_gather_with_the_direct_bank_s_values_and_gradients(conv):
    """The bank comes from one gather (a fixed rearrangement of the weight), not a roll and a
    rot90 per rotation: the same entries bit for bit, the same weight gradient, and a few
    operations where the direct construction dispatches about 20 (each a kernel launch on
    a GPU)."""
    import collections

    from torch.utils._python_dispatch import TorchDispatchMode

    conv = conv.double()
    w = conv.weight
    assert torch.equal(conv.bank(), _direct_bank(w))
    g = torch.randn_like(conv.bank())
    ours, = torch.autograd.grad((conv.bank() * g).sum(), w)
    direct, = torch.autograd.grad((_direct_bank(w) * g).sum(), w)
    assert torch.allclose(ours, direct, rtol=0, atol=1e-12)

    class Count(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = collections.Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.overloadpacket.__name__ not in {"view", "expand", "_unsafe_view", "detach",
                                                     "alias", "unsqueeze", "select", "t"}:
                self.ops[func.overloadpacket.__name__] += 1
            return func(*args, **(kwargs or {}))

    def ops(build):
        with Count() as c:
            torch.autograd.grad((build() * g).sum(), w)
        return sum(c.ops.values())

    # With the product and sum around them (about 5 operations): 8 against 16 (lifting)
    # and 24 (group convolutions) on torch 2.14.
    ours, direct = ops(conv.bank), ops(lambda: _direct_bank(w))
    assert 2 * ours <= direct, (ours, direct)


def test_a_stride_2_convolution_would_break_the_symmetry():
    """Why subsampling is a stride-1 convolution then 2x2 average pooling: a stride-2
    convolution on an even-sized map samples positions that a 90° turn moves off the grid."""
    torch.manual_seed(2)
    x = torch.randn(1, 1, 16, 16, dtype=torch.double)
    w = torch.randn(1, 1, 3, 3, dtype=torch.double)
    w4 = torch.stack([rot(w, r) for r in range(4)]).flatten(0, 1)
    strided = torch.nn.functional.conv2d(x, w4, padding=1, stride=2).unflatten(1, (1, 4))
    strided_rot = torch.nn.functional.conv2d(rot(x), w4, padding=1, stride=2).unflatten(1, (1, 4))
    assert not torch.allclose(strided_rot, transformed(strided), atol=1e-3)


def test_trained_model_stays_invariant(model):
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(8, 3, 32, 32, dtype=torch.double)
    y = torch.randint(0, 10, (8,))
    model.train()
    for _ in range(5):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    for mode in ("train", "eval"):
        getattr(model, mode)()
        with torch.no_grad():
            for k in (1, 2, 3):
                assert torch.allclose(model(rot(x, k)), model(x), atol=1e-9), (mode, k)


def test_default_width_matches_the_plain_network_within_10_percent():
    p4 = count_parameters(build_model("p4_preact_resnet"))
    plain = count_parameters(build_model("preact_resnet"))
    assert abs(p4 - plain) / plain < 0.10


def test_test_time_averaging_makes_a_plain_model_invariant_to_90_degree_turns():
    """The plain ResNet is not invariant; with test-time rotation averaging its accuracy at 0°
    and 90° (and 180°, 270°) is the same on any data, image by image."""
    from reportgen import evaluation
    from reportgen.experiments.rotation import sweep
    from reportgen.training import Classifier

    torch.manual_seed(3)
    module = Classifier("preact_resnet", {"num_classes": 10, "num_blocks": [1, 1],
                                          "c_hidden": [8, 16]}, {}, {}, seed=0)
    x = torch.randint(0, 256, (48, 3, 32, 32), dtype=torch.uint8)
    y = torch.randint(0, 10, (48,))
    plain = sweep(module, x, y, [0, 90, 180, 270], "bilinear", "mean", 16, keep_predictions=True)
    tta = sweep(module, x, y, [0, 90, 180, 270], "bilinear", "mean", 16, keep_predictions=True,
                tta=True)
    for k in (1, 2, 3):
        assert (tta["pred"][k] == tta["pred"][0]).all()
        assert tta["accuracy"][k] == tta["accuracy"][0]
        assert tta["confidence"][k] == pytest.approx(tta["confidence"][0], abs=1e-12)
        # Without averaging the same model's outputs change with the turn.
        assert abs(plain["confidence"][k] - plain["confidence"][0]) > 1e-6
    s = evaluation.score(module, x, y, 16, tta=True)
    assert s.accuracy == tta["accuracy"][0]


@pytest.mark.slow
def test_rotation_study_with_the_equivariant_model_and_tta(tiny):
    """rotation.models with the p4 network and rotation.tta: their curves are in the
    results, the figure and the PDF; both are flat across 90° turns."""
    import json
    import re

    from pypdf import PdfReader
    from typer.testing import CliRunner

    from helpers import overrides_to_args
    from reportgen.cli import app

    overrides, out = tiny
    overrides = {**overrides, "rotation.models": ["plain", "augmented", "equivariant"],
                 "rotation.tta": ["plain"],
                 "rotation.equivariant": {"name": "p4_preact_resnet", "params": {
                     "num_classes": 10, "num_blocks": [1, 1], "c_hidden": [2, 4]}}}
    r = CliRunner().invoke(app, ["all", *overrides_to_args(overrides)])
    assert r.exit_code == 0, r.output
    rot = json.loads((out / "practical2" / "rotation.json").read_text())
    assert set(rot["models"]) == {"resnet", "resnet-rotaug", "p4resnet", "resnet-tta"}
    for label in ("p4resnet", "resnet-tta"):
        acc = rot["models"][label]["val"]["accuracy"]  # angles 0, 90, 180, 270
        assert acc[1] == acc[2] == acc[3] == acc[0], label
    assert rot["models"]["p4resnet"]["flops"] > rot["models"]["resnet"]["flops"]
    svg = (out / "figures" / "practical2" / "rotation_accuracy.svg").read_text()
    assert "p4-ResNet" in svg and "test-time rotation averaging" in svg
    text = re.sub(r"\s+", " ", " ".join(p.extract_text() for p in
                                        PdfReader(out / "report.pdf").pages))
    assert "Built-in invariance." in text and "Test-time rotation averaging (ResNet)." in text
    assert "Cohen" in text and "Group Equivariant Convolutional Networks" in text

    def introduction() -> str:
        page = re.sub(r"<[^>]+>", " ", (out / "report.html").read_text())
        page = re.sub(r"\s+", " ", page)
        return page[page.index("Part 2 asks"):].split(". Part 3")[0]

    assert ("compares three ways of getting that invariance: learning it from rotated training "
            "images, building it into the network with group-equivariant convolutions"
            in introduction()) and "and averaging predictions over rotated copies" in introduction()
    # The p4 network without the augmented one: the comparisons with augmentation ended the
    # report in a template error, and the introduction still spoke of three ways.
    r = CliRunner().invoke(app, ["all", *overrides_to_args(
        {**overrides, "rotation.models": ["plain", "equivariant"], "rotation.tta": []})])
    assert r.exit_code == 0, r.output
    assert "epoch 1/1" not in r.output  # every run reused
    assert ("tests one way of getting that invariance: building it into the network with "
            "group-equivariant convolutions") in introduction()
    assert "Built-in invariance." in (out / "report.html").read_text()


@pytest.mark.slow
def test_the_widest_part2_table_fits_the_page(tiny):
    """Every model of Part 2 with test-time averaging, two seeds each: six columns of
    "35.0% ± 63.5 [13.7, 64.6]". Before, from four such columns on, the table ran off the
    page's right edge and its last column was cut off in the PDF."""
    import re

    from typer.testing import CliRunner

    from helpers import overrides_to_args
    from reportgen.cli import app

    overrides, out = tiny
    overrides = {**overrides, "rotation.models": ["plain", "augmented", "equivariant"],
                 "rotation.tta": ["plain", "augmented", "equivariant"], "train.seeds": [42, 43],
                 "shuffle.mlp_seeds": [42], "rotation.angles": [0, 90, 180, 270, 45],
                 "rotation.equivariant": {"name": "p4_preact_resnet", "params": {
                     "num_classes": 10, "num_blocks": [1, 1], "c_hidden": [2, 4]}}}
    r = CliRunner().invoke(app, ["all", *overrides_to_args(overrides)])
    assert r.exit_code == 0, r.output
    html = (out / "report.html").read_text()
    table = html[html.index('data-name="rotation"'):].split("</table>")[0]
    body = table[table.index("<tbody>"):]
    assert len(re.findall(r"<th[ >]", table)) == 7 and "± " not in body and "±\xa0" in body
    assert "past the right margin" not in r.output


def test_a_p4_network_as_model_is_not_also_the_equivariant_one(tiny):
    """With model.name = "p4_preact_resnet", the plain and the equivariant model were one run
    label: both trained, the second replaced the first in rotation.json, and the figures and
    the report failed after the training. Refused before any work; without the equivariant
    role the p4 network is a valid plain network."""
    from typer.testing import CliRunner

    from helpers import overrides_to_args
    from reportgen.cli import app

    overrides, out = tiny
    p4 = {**overrides, "model.name": "p4_preact_resnet",
          "model.params": {"num_classes": 10, "num_blocks": [1, 1], "c_hidden": [2, 4]}}
    for command in ("all", "rotation"):
        r = CliRunner().invoke(app, [command, *overrides_to_args(
            {**p4, "rotation.models": ["plain", "augmented", "equivariant"]})])
        assert r.exit_code == 2, r.output
        assert r.output.startswith("error: rotation.models = ['plain', 'augmented', "
                                   "'equivariant']: the plain and the equivariant model are both "
                                   "p4_preact_resnet")
        assert not out.exists()
    r = CliRunner().invoke(app, ["rotation", "--plan", *overrides_to_args(
        {**p4, "rotation.models": ["plain", "augmented"]})])
    assert r.exit_code == 0, r.output


def test_rotation_models_and_tta_are_checked():
    from reportgen.cli import load_config
    from reportgen.config import ConfigError

    cfg = load_config(None, sets=['rotation.models=["plain", "equivariant"]',
                                  'rotation.tta=["equivariant"]'])
    assert cfg.rotation.models == ("plain", "equivariant")
    with pytest.raises(ConfigError, match="rotation.models"):
        load_config(None, sets=['rotation.models=["plain", "p8"]'])
    with pytest.raises(ConfigError, match="rotation.models"):
        load_config(None, sets=["rotation.models=[]"])
    # Without the plain network the report's comparisons had nothing to compare with: a
    # KeyError traceback after every run had trained.
    for models in ('["augmented"]', '["equivariant", "augmented"]'):
        with pytest.raises(ConfigError, match=r"rotation.models = \[.*\] is not allowed: use a "
                                              "list of distinct names among plain, augmented, "
                                              "equivariant that includes plain"):
            load_config(None, sets=[f"rotation.models={models}"])
    with pytest.raises(ConfigError, match="rotation.tta"):
        load_config(None, sets=['rotation.tta=["augmented"]', 'rotation.models=["plain"]'])
    with pytest.raises(ConfigError, match="unknown model 'p8'"):
        load_config(None, sets=['rotation.equivariant={name="p8", params={}}'])


@pytest.mark.parametrize("name", ["preact_resnet", "resnet", "mlp"])
def test_only_a_p4_model_can_be_the_equivariant_one(name):
    """rotation.equivariant.name = 'mlp' trained an MLP that the report then described as
    group convolutions over p4, invariant to 90° turns by construction."""
    from reportgen.cli import load_config
    from reportgen.config import ConfigError

    with pytest.raises(ConfigError, match=r"rotation.equivariant.name = '\w+' is not allowed: "
                                          r"use a p4-equivariant model: p4_preact_resnet"):
        load_config(None, sets=[f'rotation.equivariant={{name="{name}", params={{}}}}'])


def test_every_model_registered_as_p4_invariant_is_invariant_to_90_degree_turns():
    from reportgen.models import MODELS

    flagged = [n for n, m in MODELS.items() if m.p4_invariant]
    assert flagged == ["p4_preact_resnet"]
    for name in flagged:
        torch.manual_seed(0)
        net = build_model(name, c_hidden=[4, 6, 8]).double().eval()
        x = torch.randn(2, 3, 32, 32, dtype=torch.double)
        with torch.no_grad():
            for k in (1, 2, 3):
                assert torch.allclose(net(rot(x, k)), net(x), atol=1e-10, rtol=0), (name, k)
