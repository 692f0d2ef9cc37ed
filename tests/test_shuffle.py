"""Part 3: the permutation's properties, the MLP's invariance, and the study end to end."""
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from reportgen import transforms as T
from reportgen.cli import app
from reportgen.models import MLP

from helpers import overrides_to_args

runner = CliRunner()


def test_permutation_is_a_fixed_bijection():
    p = T.pixel_permutation(42)
    assert sorted(p.tolist()) == list(range(1024))
    assert torch.equal(p, T.pixel_permutation(42))  # same seed, same permutation
    assert not torch.equal(p, T.pixel_permutation(43))
    assert (p != torch.arange(1024)).float().mean() > 0.9


def test_permutation_same_for_every_image_and_channel_and_invertible():
    p = T.pixel_permutation(42)
    x = torch.randn(5, 3, 32, 32)
    y = T.permute_pixels(x, p)
    flat_x, flat_y = x.flatten(2), y.flatten(2)
    for c in range(3):
        assert torch.equal(flat_y[:, c], flat_x[:, c][:, p])  # one rule for all channels/images
    # The same image in two different batches is shuffled identically.
    assert torch.equal(T.permute_pixels(x[2:3], p), y[2:3])
    inverse = torch.argsort(p)
    assert torch.equal(T.permute_pixels(y, inverse), x)


def test_check_permutation_rejects_bad_ones():
    with pytest.raises(ValueError, match="1000 entries, expected 1024"):
        T.check_permutation(torch.arange(1000))
    bad = torch.arange(1024)
    bad[5] = 6
    with pytest.raises(ValueError, match="not a permutation"):
        T.check_permutation(bad)


def test_mlp_with_permuted_first_layer_is_invariant():
    """Shuffling the inputs and the first layer's columns the same way changes nothing."""
    torch.manual_seed(0)
    p = T.pixel_permutation(7)
    mlp = MLP(num_classes=10, hidden=[32])
    x = torch.randn(6, 3, 32, 32)
    permuted = MLP(num_classes=10, hidden=[32])
    permuted.load_state_dict(mlp.state_dict())
    first = permuted.net[1]
    # Input feature index = c * 1024 + pixel; the shuffled input's feature (c, k) is (c, p[k]).
    cols = (torch.arange(3).view(3, 1) * 1024 + p.view(1, -1)).flatten()
    with torch.no_grad():
        first.weight.copy_(mlp.net[1].weight[:, cols])
    assert torch.allclose(permuted(T.permute_pixels(x, p)), mlp(x), atol=1e-5)


def test_shuffle_study_end_to_end(tiny):
    overrides, out = tiny
    r = runner.invoke(app, ["shuffle", *overrides_to_args(overrides)])
    assert r.exit_code == 0, r.output
    res_dir = out / "practical2"
    res = json.loads((res_dir / "shuffle.json").read_text())
    assert set(res["runs"]) == {"resnet", "resnet-shuffled", "mlp", "mlp-shuffled"}
    for run in res["runs"].values():
        assert 0 <= run["test_acc"] <= 1 and len(run["per_seed"][0]["metrics"]["epoch"]) == 1
    rows = (res_dir / "shuffle.csv").read_text().splitlines()
    assert rows[0] == "model,pixels,seed,val_acc,test_acc,epochs,run_dir" and len(rows) == 5
    perm = json.loads((res_dir / "permutation.json").read_text())
    assert perm == T.pixel_permutation(42).tolist()
    # Each shuffled run stores the permutation; its checkpoint applies it at evaluation.
    shuffled_dir = Path(res["runs"]["resnet-shuffled"]["run_dir"])
    assert json.loads((shuffled_dir / "permutation.json").read_text()) == perm
    for name in ("shuffle_learning_curves", "shuffle_accuracy", "shuffle_example"):
        assert (out / "figures" / "practical2" / f"{name}.png").is_file()
    assert "mlp      shuffled" in r.output

    # Repeating from the saved permutation file reuses the same runs exactly.
    again = runner.invoke(app, ["shuffle", *overrides_to_args(overrides), "--set",
                                f"shuffle.perm_file=\"{res_dir / 'permutation.json'}\""])
    assert again.exit_code == 0 and again.output.count("reusing finished run") == 4
    # The saved file holds the permutation seed 42 draws, so the report still names the seed.
    res = json.loads((res_dir / "shuffle.json").read_text())
    assert res["perm_seed"] == 42 and res["perm_file"].endswith("permutation.json")
    assert res["moved"] == sum(p != k for k, p in enumerate(perm))


@pytest.mark.parametrize("content,message", [
    ("[1, 2, 3]", "3 entries, expected 1024"),
    (json.dumps([0] * 1024), "not a permutation"),
    ("not json", "cannot be read as JSON"),
    (json.dumps(list(range(1024))), "leaves every pixel in place"),
    ('{"a": 1}', "JSON list of integers"),
    (None, "perm.json does not exist: point it at a permutation.json written by `reportgen "
           "shuffle`"),
])
def test_bad_saved_permutation(tiny, tmp_path, content, message):
    overrides, out = tiny
    f = tmp_path / "perm.json"
    if content is not None:
        f.write_text(content)
    r = runner.invoke(app, ["shuffle", *overrides_to_args(overrides), "--set",
                            f"shuffle.perm_file=\"{f}\""])
    assert r.exit_code == 2 and message in r.output
    assert not (out / "runs").exists()


def test_bad_permutation_seed(tiny):
    overrides, _ = tiny
    r = runner.invoke(app, ["shuffle", *overrides_to_args(overrides), "--set",
                            "shuffle.perm_seed=-5"])
    assert r.exit_code == 2 and "shuffle.perm_seed = -5" in r.output


@pytest.mark.parametrize("name", ["preact_resnet", "p4_preact_resnet"])
def test_the_second_model_of_part_3_must_be_an_mlp(tiny, name):
    """A ResNet as shuffle.mlp trained first, then stopped on "shuffle.json lacks runs of two
    models"; its report would have described an MLP's layers."""
    overrides, out = tiny
    overrides = {**overrides, "shuffle.mlp": {"name": name, "params": {
        "num_classes": 10, "num_blocks": [1, 1], "c_hidden": [4, 8]}}}
    r = runner.invoke(app, ["shuffle", *overrides_to_args(overrides)])
    assert r.exit_code == 2, r.output
    assert (f"shuffle.mlp.name = '{name}' is not allowed: use mlp (Part 3 compares the network "
            "with a multi-layer perceptron)") in r.output
    assert not (out / "runs").exists()


def test_an_mlp_without_hidden_layers_is_described_as_a_linear_classifier(tiny):
    """shuffle.mlp.params.hidden = [] printed "hidden layers of  units with ELU"."""
    overrides, out = tiny
    overrides = {**overrides, "shuffle.mlp": {"name": "mlp", "params": {"hidden": []}},
                 "shuffle.mlp_seeds": [42]}
    r = runner.invoke(app, ["all", *overrides_to_args(overrides)])
    assert r.exit_code == 0, r.output
    words = " ".join((out / "report.html").read_text().split())
    assert "an MLP (flattened pixels, no hidden layer: a linear classifier, trained with" in words
    assert "units with" not in words


def test_the_report_describes_a_permutation_read_from_a_file_as_it_is(tiny, tmp_path):
    """A file's permutation is not called random unless it is the one shuffle.perm_seed draws,
    and one that leaves pixels in place says how many (here two positions swap)."""
    from reportgen.experiments import get_study
    from reportgen.report import Numbering, environment

    overrides, out = tiny
    swap = list(range(1024))
    swap[0], swap[1] = 1, 0
    f = tmp_path / "swap.json"
    f.write_text(json.dumps(swap))
    r = runner.invoke(app, ["shuffle", *overrides_to_args(overrides), "--set",
                            f"shuffle.perm_file=\"{f}\""])
    assert r.exit_code == 0, r.output
    st = get_study("shuffle")
    results = st.load(out / "practical2")
    assert results["perm_seed"] is None and results["moved"] == 2
    module = environment().get_template(st.partial).make_module(
        {"st": st, "r": results, "f": st.facts(results), "page_limit": None,
         "numbering": Numbering(out / "figures" / "practical2")})
    text = " ".join(str(module.results()).split())
    assert ("whose 1,024 pixel positions were moved by one fixed permutation read from a file that "
            "leaves 1,022 of them in place, the same for every image") in text
    assert "random" not in text
