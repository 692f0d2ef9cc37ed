"""The CUDA-only code paths: data kept on the GPU, bf16 mixed precision, side-by-side runs on
the card. Marked `gpu`; ../shared/bench/gpu_check.sh runs them (`pytest -m gpu`) on a GPU
machine, and they skip where no CUDA device is visible."""
from pathlib import Path

import pytest
import torch

from test_sidebyside import _max_diff, _train, _weights

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_a_run_trains_on_the_gpu_in_bf16(tiny):
    res, lines, _ = _train(tiny, "gpu", side_by_side=1, seeds=(42,),
                           **{"train.device": "gpu"})
    r = res[0]
    assert r["accelerator"] == "gpu" and r["precision"] == "bf16-mixed"
    assert r["device"] == torch.cuda.get_device_name(0)
    assert 0.0 <= r["val_acc"] <= 1.0 and (Path(r["run_dir"]) / "predictions.npz").is_file()


def test_side_by_side_on_the_gpu_ends_where_separate_training_ends(tiny, monkeypatch):
    """fp32 without TF32, so that only the order of sums differs; the automatic setting
    groups the runs on a GPU."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    monkeypatch.setattr("reportgen.training.module.prefers_channels_last", lambda *a: False)
    sets = {"train.device": "gpu", "train.precision": "32-true"}
    together, lines, _ = _train(tiny, "together", side_by_side=0, **sets)
    apart, _, _ = _train(tiny, "apart", side_by_side=1, **sets)
    assert [r["side_by_side"] for r in together] == [2, 2]
    for t, a in zip(together, apart):
        assert _max_diff(_weights(Path(t["run_dir"])), _weights(Path(a["run_dir"]))) < 1e-2
    assert _max_diff(_weights(Path(apart[0]["run_dir"])), _weights(Path(apart[1]["run_dir"]))) > 0.1


def test_side_by_side_in_bf16_on_the_gpu(tiny):
    res, lines, _ = _train(tiny, "bf16", side_by_side=0, seeds=(42, 43, 44),
                           **{"train.device": "gpu"})
    assert [r["side_by_side"] for r in res] == [3, 3, 3]
    assert all(r["precision"] == "bf16-mixed" for r in res)
    assert len({r["run_dir"] for r in res}) == 3


@pytest.mark.parametrize("sets", [
    {"train.side_by_side_layout": "stacked"},
    {"model.name": "p4_preact_resnet",
     "model.params": {"num_classes": 10, "num_blocks": [1, 1], "c_hidden": [4, 8]}},
], ids=["resnet-stacked", "p4"])
def test_stacked_side_by_side_in_bf16_on_the_gpu(tiny, sets):
    """The stacked layout (vmap; the p4 network's only one) under bf16-mixed: on the H200
    its backward pass once failed in batch norm (see sidebyside._norms_in_float)."""
    name = "stacked-" + sets.get("model.name", "resnet")
    res, lines, _ = _train(tiny, name, side_by_side=2, **{"train.device": "gpu", **sets})
    assert [(r["side_by_side"], r["side_by_side_layout"]) for r in res] == [(2, "stacked")] * 2
    assert all(r["precision"] == "bf16-mixed" and 0.0 <= r["val_acc"] <= 1.0 for r in res)


def test_runs_augmented_together_on_the_gpu_get_their_own_augmentation():
    """The group's batched augmentation on the card: each run's images as its own stream
    makes them for that run alone with a CUDA generator (the crop boxes, flips and rotations
    are the same draws; the resampling may differ in the last bit where cuBLAS batches the
    maps' products differently)."""
    from reportgen import transforms as T
    from reportgen.config import AugmentConfig

    cfgs = [AugmentConfig(), AugmentConfig(rotate_degrees=180), AugmentConfig()]
    dev = torch.device("cuda")
    xs = T.normalize(torch.randint(0, 256, (3, 64, 3, 32, 32), dtype=torch.uint8,
                                   generator=torch.Generator().manual_seed(0)).to(dev))

    def streams(ks):
        return [T.AugmentStream(cfgs[k], torch.Generator(device=dev).manual_seed(10 + k))
                for k in ks]

    together = T.augment_streams(xs, streams(range(3)))
    for k in range(3):
        alone = T.augment_streams(xs[k:k + 1], streams([k]))[0]
        assert (together[k] - alone).abs().max().item() < 1e-5, k
    # The first batch of a stream is its slice of one `augment` draw for the whole block.
    block = T.augment(xs[1].repeat(T.AUGMENT_BLOCK, 1, 1, 1), cfgs[1],
                      torch.Generator(device=dev).manual_seed(11))
    assert (together[1] - block[:64]).abs().max().item() < 1e-5


def test_bench_profile_on_the_gpu_counts_launches_and_device_time():
    """--profile on the card: kernel launches and device time are found under the names the
    CUDA profiler gives them (the CPU tests can only feed it those names)."""
    import json

    from typer.testing import CliRunner

    from reportgen.cli import app

    r = CliRunner().invoke(app, [
        "bench", "--device", "gpu", "--json", "--steps", "4", "--warmup", "2", "--repeats", "1",
        "--eval-images", "200", "--sweep-angles", "1", "--sweep-images", "100",
        "--side-by-side", "0", "--profile", "5",
        "--set", "model.params={num_classes=10, num_blocks=[1, 1], c_hidden=[8, 8]}"])
    assert r.exit_code == 0, r.output
    p = json.loads(next(l for l in r.stdout.splitlines() if l.startswith("{")))["profile"]
    assert p["kernel_launches_per_step"] > 50 and p["graph_launches_per_step"] == 0
    assert 0 < p["device_busy_ms_per_step"] < p["step_ms"] and p["top_device"]


def test_batches_gathered_on_the_gpu_through_pinned_indices_are_the_right_images():
    """Each batch's indices reach the card by an asynchronous copy from pinned memory, whose
    blocks the caching host allocator reuses: many batches in a row, queued without a
    synchronisation in between, must still be the images the sampler chose."""
    from reportgen.data import batches

    x = torch.arange(4096, dtype=torch.int64).mul(7).remainder(251).to(torch.uint8)
    x = x.view(-1, 1, 1, 1).expand(-1, 3, 4, 4).contiguous()
    y = torch.arange(4096) % 10
    loader = batches(x.cuda(), y.cuda(), 64, shuffle_seed=3, drop_last=True)
    gathered = [(bx.sum(dim=(1, 2, 3)), by) for bx, by in loader]  # all queued, then read
    order = list(loader.sampler)
    for k, (sx, sy) in enumerate(gathered):
        idx = torch.tensor(order[k * 64:(k + 1) * 64])
        assert torch.equal(sx.cpu(), x[idx].sum(dim=(1, 2, 3)))
        assert torch.equal(sy.cpu(), y[idx])
