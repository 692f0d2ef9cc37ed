"""Untrusted files: a planted checkpoint or cache never runs code. Each place that reads one
gets a pickle whose `__reduce__` would write a marker file; the marker must never appear."""
import contextlib
import json
import os
import pathlib

import pytest
import torch
from typer.testing import CliRunner

from reportgen.cli import app

from helpers import only_run, overrides_to_args

runner = CliRunner()


class Payload:
    """Unpickling this with full pickle writes `marker`: what an attacker's file would do."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.write_text, (self.marker, "code ran"))


def plant(path: pathlib.Path, marker: pathlib.Path, around: dict | None = None) -> None:
    """A file that looks like a checkpoint (or cache) with the payload inside."""
    torch.save({**(around or {}), "payload": Payload(marker)}, path)


@pytest.fixture
def trained(tiny):
    overrides, out = tiny
    r = runner.invoke(app, ["train", *overrides_to_args(overrides)])
    assert r.exit_code == 0, r.output
    return overrides, out, only_run(out)


@pytest.mark.parametrize("which", ["last.ckpt", "best.ckpt"])
def test_planted_checkpoint_in_an_unfinished_run_runs_nothing(trained, tmp_path, which):
    overrides, out, run = trained
    (run / "results.json").unlink()  # unfinished: the next command resumes from a checkpoint
    if which == "best.ckpt":
        (run / "checkpoints" / "last.ckpt").unlink()
    marker = tmp_path / "pwned"
    good = torch.load(run / "checkpoints" / which, weights_only=True)
    plant(run / "checkpoints" / which, marker, good)
    r = runner.invoke(app, ["train", *overrides_to_args(overrides)])
    assert not marker.exists()
    assert r.exit_code == 2 and f"{which} is damaged or not a reportgen checkpoint" in r.output


def test_planted_checkpoint_option_runs_nothing(tiny, tmp_path):
    overrides, _ = tiny
    marker, ckpt = tmp_path / "pwned", tmp_path / "model.ckpt"
    plant(ckpt, marker)
    r = runner.invoke(app, ["rotation", *overrides_to_args(overrides), "--checkpoint", str(ckpt)])
    assert not marker.exists()
    assert r.exit_code == 2 and "model.ckpt is damaged or not a reportgen checkpoint" in r.output
    # Said plainly, not as torch's message, which explains how to load such a file anyway.
    assert ("(it holds Python objects beyond tensors and plain values, which could run code when "
            "loaded: it was not loaded)") in r.output and "weights_only" not in r.output


def test_a_checkpoint_whose_settings_ask_for_a_huge_network_builds_nothing(trained, tmp_path,
                                                                          monkeypatch):
    """A 62 KB checkpoint whose settings named a ResNet with 12,000 channels: Lightning
    built and initialised it, and the kernel's OOM killer ended `rotation --checkpoint`
    (exit 137 after 82 s). The settings must describe the weights the file holds, tensor by
    tensor, before any network is built (here 600 channels)."""
    from reportgen import models
    from reportgen.training import module

    overrides, out, run = trained
    ck = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)
    # Wide enough to be refused, small enough that a regression fails here instead of
    # exhausting the test machine's memory.
    ck["hyper_parameters"]["model_params"]["c_hidden"] = [600, 600]
    evil = tmp_path / "evil.ckpt"
    torch.save(ck, evil)
    built = []
    real = models.build_model

    def build(name, **params):
        built.append(torch.empty(0).device.type)
        return real(name, **params)

    monkeypatch.setattr(models, "build_model", build)
    monkeypatch.setattr(module, "build_model", build)
    r = runner.invoke(app, ["rotation", *overrides_to_args(overrides), "--checkpoint", str(evil)])
    assert r.exit_code == 2, r.output
    assert ("evil.ckpt is damaged or not a reportgen checkpoint (its settings describe 38 "
            "tensors of ") in r.output and "of other shapes" in r.output
    assert built == ["meta"]  # counted on the meta device, never allocated


def test_a_resume_checkpoint_with_weights_of_other_shapes_is_named(trained):
    overrides, out, run = trained
    (run / "results.json").unlink()  # unfinished: the next command resumes from last.ckpt
    last = run / "checkpoints" / "last.ckpt"
    ck = torch.load(last, weights_only=True)
    name = next(k for k in ck["state_dict"] if k.endswith("weight"))
    ck["state_dict"][name] = ck["state_dict"][name].flatten()
    torch.save(ck, last)
    r = runner.invoke(app, ["train", *overrides_to_args(overrides)])
    assert r.exit_code == 2, r.output
    assert ("last.ckpt is damaged or not a reportgen checkpoint (its settings describe "
            "38 tensors of ") in r.output and "Traceback" not in r.output


def test_a_checkpoint_too_large_for_the_memory_free_now_is_named(trained, monkeypatch):
    from reportgen.training import memory

    overrides, out, run = trained
    monkeypatch.setattr(memory, "host_available", lambda: 1000)
    r = runner.invoke(app, ["rotation", *overrides_to_args(overrides), "--checkpoint",
                            str(run / "checkpoints" / "best.ckpt")])
    assert r.exit_code == 2, r.output
    assert "to load, more than the 1,000 bytes available on this machine: free memory" in r.output


def test_lightning_resume_path_loads_weights_only(tmp_path):
    """`fit(ckpt_path=...)` reads the checkpoint again through the run's CheckpointIO."""
    from reportgen.training import VerifiedCheckpointIO

    marker, ckpt = tmp_path / "pwned", tmp_path / "last.ckpt"
    plant(ckpt, marker, {"state_dict": {}, "epoch": 0})
    with pytest.raises(Exception):
        VerifiedCheckpointIO().load_checkpoint(ckpt)
    assert not marker.exists()


def test_planted_data_cache_runs_nothing_and_is_rebuilt(trained, tmp_path):
    overrides, out, _ = trained
    cache = next((out / "cache").glob("cifar10-*.pt"))
    blob = torch.load(cache, weights_only=True)
    marker = tmp_path / "pwned"
    plant(cache, marker, blob)
    r = runner.invoke(app, ["train", *overrides_to_args(overrides)])
    assert r.exit_code == 0, r.output
    assert not marker.exists()
    assert "is unusable" in r.output and "reusing finished run" in r.output
    json.loads(next((out / "runs").iterdir()).joinpath("results.json").read_text())


# --- data that must not be trusted blindly ----------------------------------------------

def _config(source, tmp_path, **kw):
    from reportgen.config import DataConfig

    return DataConfig(**{"source": str(source), "partial": True,
                         "cache_dir": str(tmp_path / "cache"), "val_size": 10, **kw})


def _load(source, tmp_path, **kw):
    from reportgen import data as D

    return D.load_cifar10(_config(source, tmp_path, **kw), env={}, log=lambda m: None)


def _tar(folder, dest, mode="w"):
    import tarfile

    with tarfile.open(dest, mode) as t:
        t.add(folder, arcname="cifar10-tiny")
    return dest


@pytest.mark.parametrize("cut", ["last header", "mid archive", "end marker"])
def test_truncated_tar_is_an_error(image_folder, tmp_path, cut):
    from reportgen import data as D

    arc = _tar(image_folder, tmp_path / "c.tar")
    blob = arc.read_bytes()
    import tarfile

    with tarfile.open(arc) as t:
        last = t.getmembers()[-1]
    at = {"last header": last.offset + 100, "mid archive": len(blob) // 2,
          "end marker": last.offset_data + last.size + 10}[cut]
    arc.write_bytes(blob[:at])
    with pytest.raises(D.DataError, match="c.tar is truncated or corrupt"):
        _load(arc, tmp_path)


def test_gzip_checksum_is_verified(image_folder, tmp_path):
    """Four bytes changed where nothing but gzip's CRC-32 can notice (a member's padding; in a
    JPEG copy, image data has no checksum of its own): caught at the stream's end."""
    import gzip
    import tarfile

    from reportgen import data as D

    raw = _tar(image_folder, tmp_path / "c.tar").read_bytes()
    with tarfile.open(tmp_path / "c.tar") as t:
        m = next(m for m in t.getmembers() if m.isfile() and m.size % 512 < 500)
    pos = m.offset_data + m.size + 4  # inside the zero padding after the member's data
    bad = raw[:pos] + bytes(b ^ 0x55 for b in raw[pos:pos + 4]) + raw[pos + 4:]
    good_gz = gzip.compress(raw)
    bad_gz = gzip.compress(bad)
    # the bad stream with the good stream's trailer: what flipping bits in transit does
    crafted = bad_gz[:-8] + good_gz[-8:]
    (tmp_path / "c.tar.gz").write_bytes(crafted)
    with pytest.raises(D.DataError, match="c.tar.gz is truncated or corrupt"):
        _load(tmp_path / "c.tar.gz", tmp_path)


def test_counts_must_be_cifar10s_unless_partial(image_folder, tmp_path):
    from reportgen import data as D

    with pytest.raises(D.DataError, match=r"train/ has 6 images of class airplane, CIFAR-10 has "
                                          r"5,000.*data.partial = true"):
        _load(image_folder, tmp_path, partial=False)
    assert _load(image_folder, tmp_path).train_x.shape[0] == 60


@pytest.mark.parametrize("layout,message", [
    ("no test", "lacks test/"),
    ("empty", "holds no CIFAR-10"),
    ("missing test_batch", "test_batch is missing"),
    ("damaged data_batch_1", "data_batch_1 fails torchvision's md5 check"),
])
def test_a_named_data_folder_never_downloads(tmp_path, monkeypatch, layout, message):
    import shutil

    import torchvision.datasets.cifar as tvc

    from helpers import patch_torchvision_md5, write_image_folder, write_torchvision_batches
    from reportgen import data as D

    def no_network(*a, **k):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(tvc, "download_and_extract_archive", no_network)
    src = tmp_path / "src"
    if layout == "no test":
        shutil.rmtree(write_image_folder(src) / "test")
    elif layout == "empty":
        src.mkdir()
    else:
        batches = write_torchvision_batches(src)
        patch_torchvision_md5(monkeypatch, batches)
        if layout == "missing test_batch":
            (batches / "test_batch").unlink()
        else:
            (batches / "data_batch_1").write_bytes(b"damaged")
    with pytest.raises(D.DataError, match=message):
        _load(src, tmp_path)


def test_output_inside_the_data_folder_keeps_the_cache(image_folder, tmp_path):
    from reportgen import data as D

    before = D.fingerprint(image_folder)
    out = image_folder / "output"
    (out / "cache").mkdir(parents=True)
    (out / "cache" / "cifar10-x.pt").write_bytes(b"x" * 100)
    (image_folder / "notes.txt").write_text("mine")
    assert D.fingerprint(image_folder) == before
    (image_folder / "train" / "cat" / "0000.png").touch()  # a data file did change
    assert D.fingerprint(image_folder) != before


def test_image_bombs_and_empty_files_are_named(image_folder, tmp_path):
    import struct
    import zlib as z

    from reportgen import data as D

    def chunk(kind, payload):
        return (struct.pack(">I", len(payload)) + kind + payload
                + struct.pack(">I", z.crc32(kind + payload) & 0xFFFFFFFF))

    bomb = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", z.compress(b"\x00" * 100)) + chunk(b"IEND", b""))
    (image_folder / "train" / "cat" / "0001.png").write_bytes(bomb)
    with pytest.raises(D.DataError, match=r"train/cat/0001.png is .*(30000x30000|not a readable)"):
        D.read_image_folder(image_folder)
    (image_folder / "train" / "cat" / "0001.png").write_bytes(b"")
    with pytest.raises(D.DataError, match=r"train/cat/0001.png is empty \(0 bytes\)") as e:
        D.read_image_folder(image_folder)
    assert "BytesIO" not in str(e.value)
    (image_folder / "train" / "cat" / "0001.png").write_bytes(b"not an image at all")
    with pytest.raises(D.DataError, match=r"train/cat/0001.png is not a readable image") as e:
        D.read_image_folder(image_folder)
    assert "BytesIO" not in str(e.value) and "0x" not in str(e.value)


def test_files_too_large_to_be_an_image_are_named_before_they_are_read(image_folder, tmp_path,
                                                                       monkeypatch):
    """A 64 GiB sparse "image" in the folder, or an archive member that inflates to more than
    any 32x32 image needs, filled the memory before decoding could fail; files that are not
    images (notes, a model) are skipped without being read."""
    import tarfile
    import zipfile

    from reportgen import data as D

    read = []
    real = pathlib.Path.read_bytes
    monkeypatch.setattr(pathlib.Path, "read_bytes", lambda p: read.append(p.name) or real(p))
    with open(image_folder / "train" / "notes.bin", "wb") as f:  # not an image: never read
        f.truncate(64 << 30)
    D.read_image_folder(image_folder)
    assert read and "notes.bin" not in read
    big = image_folder / "train" / "cat" / "0001.png"
    with open(big, "wb") as f:
        f.truncate(64 << 30)
    with pytest.raises(D.DataError, match=r"train/cat/0001.png holds 68,719,476,736 bytes, more "
                                          r"than any 32x32 image needs \(1,048,576 at most\)"):
        D.read_image_folder(image_folder)
    big.unlink()
    (image_folder / "train" / "notes.bin").unlink()
    zeros = b"\0" * (D.MAX_IMAGE_BYTES + 1)
    zpath = tmp_path / "bomb.zip"
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED) as z:
        for q in sorted(image_folder.rglob("*")):
            if q.is_file():
                z.write(q, q.relative_to(image_folder).as_posix())
        z.writestr("train/cat/bomb.png", zeros)
    with zipfile.ZipFile(zpath) as z:  # small on disk, large inflated
        assert z.getinfo("train/cat/bomb.png").compress_size < 16 << 10
    with pytest.raises(D.DataError, match=r"bomb.zip:train/cat/bomb.png holds 1,048,577 bytes"):
        D.read_image_folder(zpath)
    tpath = tmp_path / "big.tar.gz"
    with tarfile.open(tpath, "w:gz") as t:
        t.add(image_folder, arcname=".")
        info = tarfile.TarInfo("train/cat/big.png")
        info.size = len(zeros)
        import io

        t.addfile(info, io.BytesIO(zeros))
    with pytest.raises(D.DataError, match=r"big.tar.gz:train/cat/big.png holds 1,048,577 bytes"):
        D.read_image_folder(tpath)


def test_stdout_holds_only_results(tiny):
    """Progress goes to stderr: a script that captures stdout gets the results lines only."""
    import subprocess
    import sys

    overrides, _ = tiny
    proc = subprocess.run([sys.executable, "-m", "reportgen.cli", "train",
                           *overrides_to_args(overrides)], capture_output=True, text=True,
                          cwd=pathlib.Path(__file__).resolve().parents[1], timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("val_acc "), proc.stdout[-2000:]
    assert "resnet epoch 1/1: train loss" in proc.stderr  # one line per epoch, no bars
    if not os.path.exists("/dev/full"):
        return
    # stdout on a full disk: the results line cannot be written. It was a traceback.
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "reportgen.cli", "train",
                               *overrides_to_args(overrides)], stdout=full, stderr=subprocess.PIPE,
                              text=True, cwd=pathlib.Path(__file__).resolve().parents[1],
                              timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: cannot write the result to standard output (No space left on device): the work "
        "is done and saved; run the command again with stdout going somewhere writable")


# --- no traceback for input a user can give ------------------------------------------------

def _bad_inputs(tmp_path, folder):
    text_tar = tmp_path / "notes.tar"
    text_tar.write_text("these are my notes, not an archive\nsecond line\n")
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("[train\nepochs = 3\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"\x00" * 64)
    wrong = tmp_path / "wrong"
    (wrong / "practical2").mkdir(parents=True)
    for name in ("part1", "rotation", "shuffle"):
        (wrong / "practical2" / f"{name}.json").write_text("{}")
    long = "x" * 300  # past the 255 bytes a file or folder name may have
    data = ["--data", str(folder), "--set", "data.partial=true", "--set", "data.val_size=10",
            "--out", str(tmp_path / "o")]
    return [
        (["train", "--config", str(tmp_path / "nope.toml")], "nope.toml does not exist"),
        (["train", "--config", str(bad_toml)], "bad.toml is not valid TOML"),
        (["train", "--set", "=5"], "the key '' is empty"),
        (["train", "--set", 'name=".."'], "name = '..' is not allowed"),
        (["train", "--set", "optim.milestones=[70, 70]"], "optim.milestones = [70, 70]"),
        (["train", "--set", "train.device=\"tpu\""], "train.device = 'tpu'"),
        (["train", "--epochs", "-1"], "train.epochs = -1"),
        (["train", "--data", str(text_tar)], "notes.tar is truncated or corrupt, or not a"),
        (["train", "--data", str(tmp_path / "absent")], "absent does not exist"),
        (["train", "--data", str(empty)], "holds no CIFAR-10"),
        (["train", *data, "--subset", "99999"], "data.subset = 99999 is more than the 50"),
        (["train", *data, "--set", "model.params={num_classes = 5}"],
         "model.params.num_classes = 5, but the data set has 10 classes"),
        (["train", *data, "--set", "data.partial=false"], "CIFAR-10 has 5,000"),
        (["rotation", "--angles", "x"], "--angles 'x'"),
        (["rotation", "--checkpoint", str(junk)], "junk.ckpt is damaged"),
        # A name that is not UTF-8 was reported as a damaged checkpoint.
        (["rotation", "--checkpoint", str(tmp_path / "ck\udce9.ckpt")],
         "contains the byte 0xE9, which is not UTF-8: rename the file"),
        (["shuffle", "--set", f'shuffle.perm_file="{tmp_path / "p.json"}"'], "p.json does not exist"),
        (["figures", "--out", str(empty)], "no figures could be drawn"),
        (["report", "--out", str(empty)], "part1.json is missing: run `reportgen train` first"),
        (["report", "--out", str(wrong)], "part1.json does not hold part1's results (its field 'study'"),
        (["all", "--set", f'report.user_text="{tmp_path / "mine.toml"}"'], "mine.toml does not exist"),
        (["bench", "--steps", "0"], "--steps 0"),
        # A name longer than a file system allows: the error said only "[Errno 36] File name
        # too long: '...'"; now it names what to do.
        (["train", *data, "--set", f"figures_dir='{tmp_path / long}'"],
         f"File name too long ({tmp_path / long}/practical2): use a shorter name (255 bytes"),
        (["train", "--data", str(tmp_path / long)], f"File name too long ({tmp_path / long})"),
        (["train", "--config", str(tmp_path / long)], "use a shorter name"),
        (["train", *data, "--set", f"name='{'n' * 101}'"],
         "use a plain folder name of at most 100 bytes"),
    ]


def test_bad_input_never_ends_in_a_traceback(tmp_path, image_folder):
    """Every command, a table of inputs a user can give: one `error:` line, exit 2, nothing
    written into the output folder."""
    for args, message in _bad_inputs(tmp_path, image_folder):
        r = runner.invoke(app, args)
        assert r.exit_code == 2, (args, r.output, r.exception)
        assert isinstance(r.exception, SystemExit), (args, r.exception)
        lines = r.output.strip().splitlines()
        assert lines[-1].startswith("error: ") and message in lines[-1], (args, r.output)
        assert "Traceback" not in r.output
    assert not (tmp_path / "o" / "runs").exists()


WRONG_CONTENT = [
    (lambda b: b.pop("model_info"), "the field model_info"),
    (lambda b: b.update(seeds=None), "seeds as a list of integers (found null)"),
    (lambda b: b.update(test_acc=float("nan")), "test_acc as a number from 0 to 1 (found nan)"),
    (lambda b: b.update(test_acc=1.5), "test_acc as a number from 0 to 1 (found 1.5)"),
    (lambda b: b["per_seed"][0]["metrics"].update(lr=[0.1] * 7),
     "1 values (one per epoch) in per_seed[0].metrics.lr (found 7)"),
    (lambda b: b["per_seed"].clear(), "per_seed as a list of at least 1 item (found 0)"),
    (lambda b: b["samples"]["images"][0].__setitem__(0, "x"), "samples.images[0] as an image"),
    (lambda b: b["samples"]["labels"].__setitem__(0, 10), "samples.labels[0] as a class index"),
    (lambda b: b["train"]["augment"].update(crop_scale=[2, 1]), "train with valid settings"),
    (lambda b: b["optimizer"].update(name="nope"), "optimizer with valid settings"),
    (lambda b: b["config"]["train"].update(epochs="many"), "config with valid settings"),
    (lambda b: b["data"].update(classes=[]), "data.classes as a list of at least 1 item"),
    (lambda b: b.update(files_sha256=[]), "files_sha256 as a table (found a list)"),
]


def test_results_with_the_wrong_content_name_the_field(trained):
    """A results file that passes its checksum (forged, or written by another tool) but holds
    the wrong kind of value: one line naming the field, for figures and report alike."""
    from reportgen.files import seal

    overrides, out, _ = trained
    res = out / "practical2" / "part1.json"
    good = res.read_text()
    for change, field in WRONG_CONTENT:
        blob = json.loads(good)
        change(blob)
        res.write_text(json.dumps(seal(blob)))
        for cmd in ("figures", "report"):
            r = runner.invoke(app, [cmd, *overrides_to_args(overrides)])
            assert r.exit_code == 2 and isinstance(r.exception, SystemExit), (cmd, r.output)
            assert f"part1.json lacks {field}" in r.output, r.output
            assert "run `reportgen train` again" in r.output and "Traceback" not in r.output
    res.write_text(good)
    r = runner.invoke(app, ["figures", *overrides_to_args(overrides)])
    assert r.exit_code == 0, r.output


def test_planted_or_damaged_predictions_run_nothing_and_name_the_file(trained, tmp_path):
    """The per-image predictions behind the paired tests are read with allow_pickle=False: an
    object array (a pickle inside the .npz) fails to load, and nothing runs."""
    import numpy as np

    overrides, out, _ = trained
    path = out / "practical2" / "part1-predictions.npz"
    marker = tmp_path / "marker"
    arr = np.empty(1, dtype=object)
    arr[0] = Payload(marker)
    with open(path, "wb") as f:
        np.savez(f, **{"labels/val": arr})
    for cmd in ("figures", "report"):
        r = runner.invoke(app, [cmd, *overrides_to_args(overrides)])
        assert r.exit_code == 2 and "part1-predictions.npz is damaged" in r.output, r.output
        assert "Traceback" not in r.output
    assert not marker.exists()
    path.write_bytes(b"not a zip")
    r = runner.invoke(app, ["report", *overrides_to_args(overrides)])
    assert r.exit_code == 2 and "part1-predictions.npz is damaged" in r.output
    from reportgen import predictions

    np.savez(path, **{"labels/val": np.zeros(3, dtype=np.uint8)})  # too short, wrong keys
    arrays = predictions.load(path, "train")
    with pytest.raises(predictions.PredictionsError, match="lacks pred/42/val of shape"):
        predictions.get(arrays, "pred/42/val", path, "train", (10,))
    with pytest.raises(predictions.PredictionsError, match="lacks labels/val of shape"):
        predictions.get(arrays, "labels/val", path, "train", (10,))
    path.unlink()
    r = runner.invoke(app, ["figures", *overrides_to_args(overrides)])
    assert r.exit_code == 2 and "part1-predictions.npz is missing" in r.output


def test_results_changed_after_they_were_written_are_refused_in_one_line(trained):
    """Any value changed in a study's results file (a number typed over, a string where a
    list was, a damaged disk) is refused by its checksum, before it can reach a figure as a
    traceback or the report as a number that no run produced; figures and report already
    written stay as they were."""
    overrides, out, _ = trained
    r = runner.invoke(app, ["figures", *overrides_to_args(overrides)])
    assert r.exit_code == 0, r.output
    curves = out / "figures" / "practical2" / "part1_learning_curves.png"
    drawn = curves.read_bytes()
    res = out / "practical2" / "part1.json"
    good = res.read_text()
    for change in (lambda b: b.update(test_acc=0.99),
                   lambda b: b["samples"]["images"][0].__setitem__(0, "x"),
                   lambda b: b["per_seed"][0]["metrics"].update(train_loss=None)):
        blob = json.loads(good)
        change(blob)
        res.write_text(json.dumps(blob))
        for cmd in ("figures", "report"):
            r = runner.invoke(app, [cmd, *overrides_to_args(overrides)])
            assert r.exit_code == 2, (cmd, r.output)
            assert "part1.json was changed after reportgen wrote it" in r.output
            assert "run `reportgen train` again" in r.output and "Traceback" not in r.output
    assert curves.read_bytes() == drawn
    res.write_text(good)
    r = runner.invoke(app, ["figures", *overrides_to_args(overrides)])
    assert r.exit_code == 0, r.output
    # A file written beside the results (the per-image predictions) is checked against them.
    npz = out / "practical2" / "part1-predictions.npz"
    import numpy as np

    with np.load(npz) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["labels/val"] = (arrays["labels/val"] + 1) % 10
    with open(npz, "wb") as f:
        np.savez(f, **arrays)
    r = runner.invoke(app, ["report", *overrides_to_args(overrides)])
    assert r.exit_code == 2 and "part1-predictions.npz, written with part1.json, is missing or " \
        "was changed since" in r.output, r.output


def test_a_changed_run_results_file_is_evaluated_again_not_trusted(trained):
    """A run's own results.json with a changed value: the report refuses it, the plan says
    the run's best checkpoint is evaluated again, and `train` does that (no epoch retrained),
    after which the report builds."""
    from reportgen.files import MissingResults
    from reportgen.report import _runs

    overrides, out, run = trained
    data = json.loads((out / "practical2" / "part1.json").read_text())["data"]
    assert len(_runs([(str(run), "train")], data, out)) == 1
    path = run / "results.json"
    blob = json.loads(path.read_text())
    measured = blob["val_acc"]
    blob["val_acc"] = 1.0 if measured != 1.0 else 0.0
    path.write_text(json.dumps(blob))
    with pytest.raises(MissingResults, match="results.json is damaged, of an older reportgen or "
                       "was changed after training wrote it: run `reportgen train` again"):
        _runs([(str(run), "train")], data, out)
    r = runner.invoke(app, ["train", "--plan", *overrides_to_args(overrides)])
    assert r.exit_code == 0 and "its best checkpoint is evaluated again" in r.output, r.output
    r = runner.invoke(app, ["train", *overrides_to_args(overrides)])
    assert r.exit_code == 0, r.output
    assert "evaluating best.ckpt" in r.output and "epoch 1/1" not in r.output
    assert json.loads(path.read_text())["val_acc"] == measured
    assert _runs([(str(run), "train")], data, out)[0]["val_acc"] == measured


def test_a_moved_output_folder_still_makes_figures_and_the_run_table(trained, tmp_path):
    """The paths inside results files are where the study ran (a GPU machine, say); figures
    and report read the runs from the folder where they are now."""
    import shutil

    overrides, out, run = trained
    moved = tmp_path / "elsewhere"
    shutil.move(str(out), str(moved))
    sets = {**overrides, "out_dir": str(moved), "figures_dir": str(moved / "figures")}
    from reportgen.report import _runs

    r = runner.invoke(app, ["figures", *overrides_to_args(sets)])
    assert r.exit_code == 0, r.output  # the learning curves come from part1.json alone
    part1 = json.loads((moved / "practical2" / "part1.json").read_text())
    stored = [e["run_dir"] for e in part1["per_seed"]]
    assert stored == [str(run)] and not run.exists()
    rows = _runs([(d, "train") for d in stored], part1["data"], moved)
    assert [row["run_dir"] for row in rows] == [str(moved / "runs" / run.name)]
    assert rows[0]["best_checkpoint"].startswith(str(moved / "runs" / run.name))


@pytest.mark.parametrize("damage", ["garbage", "fifo", "columns", "text", "epochs"])
def test_a_damaged_metrics_file_is_one_line(trained, damage):
    overrides, out, run = trained
    (out / "practical2" / "part1.json").unlink()
    csv = run / "metrics.csv"
    with contextlib.ExitStack() as stack:
        if damage == "fifo":  # a FIFO hung `reportgen all` in an untrusted output folder
            csv.unlink()
            stack.enter_context(guarded_fifo(csv))
        elif damage == "garbage":
            csv.write_bytes(b"\xff\xfe\x00garbage\n\x00")
        elif damage == "columns":  # valid CSV, but not a run's: stored, then refused forever
            csv.write_text("a,b\n1,2\n")
        elif damage == "text":
            csv.write_text(csv.read_text().replace("\n1,", "\none,", 1))
        else:  # no epoch at all
            csv.write_text(csv.read_text().splitlines()[0] + "\n")
        r = runner.invoke(app, ["train", *overrides_to_args(overrides)])
    assert r.exit_code == 2 and "metrics.csv is missing or damaged" in r.output, r.output
    assert "Traceback" not in r.output
    if damage == "fifo":
        assert "it is a FIFO, not a regular file" in r.output


def test_a_folder_where_a_results_file_goes_is_named_with_what_to_do(trained):
    """A folder at part1.json was "missing: run `reportgen train` first", and train then
    stopped at it; a rename's error named the temporary file, not part1.json."""
    overrides, out, run = trained
    part1 = out / "practical2" / "part1.json"
    part1.unlink()
    part1.mkdir()
    r = runner.invoke(app, ["report", *overrides_to_args(overrides), "--format", "tex"])
    assert r.exit_code == 2 and r.output.strip().splitlines()[-1] == (
        f"error: {part1} is a folder, not a results file: move it away, then run "
        "`reportgen train`"), r.output
    r = runner.invoke(app, ["train", *overrides_to_args(overrides)])
    assert r.exit_code == 2 and r.output.strip().splitlines()[-1] == (
        f"error: Is a directory ({part1}): a folder stands where a file is needed: move it, "
        "or choose another location"), r.output
    part1.rmdir()
    r = runner.invoke(app, ["train", *overrides_to_args(overrides)])
    assert r.exit_code == 0 and part1.is_file(), r.output


@pytest.mark.parametrize("damage", ["delete", "change", "fifo"])
def test_a_runs_changed_predictions_are_scored_again(trained, damage):
    """The per-image predictions behind the paired tests are a run's too: deleted, or
    changed since the run scored them, the run's best checkpoint is evaluated again."""
    import numpy as np

    overrides, out, run = trained
    path = run / "predictions.npz"
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    stack = contextlib.ExitStack()
    if damage == "delete":
        path.unlink()
    elif damage == "fifo":  # its checksum opened it, and a FIFO hung the command
        path.unlink()
        stack.enter_context(guarded_fifo(path))
    else:
        with open(path, "wb") as f:
            np.savez(f, **{**arrays, "val": (arrays["val"] + 1) % 10})
    with stack:
        r = runner.invoke(app, ["train", *overrides_to_args(overrides)])
    assert r.exit_code == 0, r.output
    assert "evaluating best.ckpt" in r.output and "reusing finished run" not in r.output
    with np.load(path) as z:
        assert np.array_equal(z["val"], arrays["val"])


@contextlib.contextmanager
def guarded_fifo(path: pathlib.Path):
    """A named pipe at `path`. Opening it for reading blocks until a writer comes; the guard
    writes to it after 20 s, so code that opens it fails its test instead of hanging the
    suite."""
    import os
    import stat
    import threading

    os.mkfifo(path)
    done = threading.Event()

    def guard():
        if not done.wait(20) and stat.S_ISFIFO(os.stat(path).st_mode):  # not if replaced
            with open(path, "w") as w:
                w.write("opened")

    t = threading.Thread(target=guard, daemon=True)
    t.start()
    try:
        yield path
    finally:
        done.set()
        t.join()


@pytest.fixture
def fifo(tmp_path):
    with guarded_fifo(tmp_path / "pipe") as path:
        yield path


def test_read_text_refuses_what_is_not_a_small_regular_file(tmp_path, fifo):
    import os

    from reportgen.files import read_text

    big = tmp_path / "big.toml"
    with open(big, "wb") as f:  # sparse: 17 MiB on paper, nothing on disk
        f.truncate(17 << 20)
    bad = tmp_path / "latin1.toml"
    bad.write_bytes("name = 'caf\xe9'".encode("latin-1"))
    (tmp_path / "ok.toml").write_text("name = 'ok'\n")
    for path, reason in ((fifo, "it is a FIFO, not a regular file"),
                         (os.devnull, "it is a device, not a regular file"),  # /dev/zero never ends
                         (tmp_path, "it is a folder, not a regular file"),
                         (big, "it holds 17 MiB, more than the 16 MiB such a file can have")):
        with pytest.raises(OSError, match=reason):
            read_text(path)
    with pytest.raises(UnicodeDecodeError):
        read_text(bad)
    assert read_text(tmp_path / "ok.toml") == "name = 'ok'\n"


def test_user_named_files_that_are_pipes_devices_or_huge_give_one_line(tmp_path, fifo):
    """An experiment file, the student's text and a permutation file named by the user: a FIFO
    hung the command, /dev/zero filled the memory (MemoryError traceback)."""
    import os

    big = tmp_path / "big.json"
    with open(big, "wb") as f:
        f.truncate(17 << 20)
    cases = [
        (["train", "--config", str(fifo)], f"experiment file {fifo} cannot be read (it is a FIFO"),
        (["train", "--config", os.devnull], "cannot be read (it is a device, not a regular file)"),
        (["all", "--set", f'report.user_text="{fifo}"'], "it is a FIFO, not a regular file"),
        (["all", "--set", f'report.user_text="{os.devnull}"'], "it is a device"),
        (["shuffle", "--set", f'shuffle.perm_file="{big}"'], "big.json cannot be read as JSON "
                                                            "(it holds 17 MiB, more than"),
        (["train", "--data", str(fifo)], f"--data {fifo} is neither a folder nor a file"),
        (["train", "--data", os.devnull], "is neither a folder nor a file (a FIFO, a device"),
    ]
    for args, message in cases:
        r = runner.invoke(app, args)
        assert r.exit_code == 2, (args, r.output, r.exception)
        lines = r.output.strip().splitlines()
        assert lines[-1].startswith("error: ") and message in lines[-1], (args, r.output)


@pytest.mark.parametrize("damage", ["delete", "truncate"])
def test_a_finished_run_without_its_best_checkpoint_says_which_run_to_train_anew(trained,
                                                                                damage):
    """The rotation sweep needs Part 1's best weights. Without them, training reuses the run
    as finished, so `reportgen train` (the old advice) changed nothing, and --retrain would
    train every run again: the message names the one run folder to delete, and after that
    the same command trains that run and goes through."""
    overrides, out, run = trained
    best = run / "checkpoints" / "best.ckpt"
    if damage == "delete":
        best.unlink()
    else:
        best.write_bytes(best.read_bytes()[:1000])
    r = runner.invoke(app, ["rotation", *overrides_to_args(overrides)])
    assert r.exit_code == 2, r.output
    why = "does not exist, so" if damage == "delete" else "is damaged or not a reportgen checkpoint"
    last = r.output.strip().splitlines()[-1]
    assert why in last and (f"run {run.name} lost its trained weights: delete {run} and run "
                            "the same command again") in last, last
    import shutil

    shutil.rmtree(run)
    r = runner.invoke(app, ["rotation", *overrides_to_args(overrides)])
    assert r.exit_code == 0, r.output
    assert (run / "checkpoints" / "best.ckpt").is_file()


def test_toml_and_json_nested_too_deep_or_with_huge_integers_give_one_line(tmp_path):
    """Files a user names, read by Python's parsers: 100,000 nested arrays were a
    RecursionError traceback, a dotted key of 100,000 parts made tomllib take tens of GiB
    (the kernel killed the process), and an integer of 5,000 digits a ValueError traceback."""
    deep = "[" * 100_000 + "]" * 100_000
    dotted = ".".join(["a"] * 20_000) + " = 1"  # 100,000 took tens of GiB
    toml_cases = {"arrays.toml": f"[train]\nepochs = {deep}\n",
                  "dotted.toml": dotted + "\n",
                  "tables.toml": "x = " + "{b = " * 5000 + "1" + "}" * 5000 + "\n",
                  "digits.toml": "[train]\nepochs = " + "1" * 5000 + "\n"}
    for name, text in toml_cases.items():
        path = tmp_path / name
        path.write_text(text)
        for args, what in ((["train", "--config", str(path)], "is not valid TOML"),
                           (["all", "--set", f'report.user_text="{path}"'],
                            "cannot be read as TOML")):
            r = runner.invoke(app, [*args, "--plan"])
            assert r.exit_code == 2 and r.output.startswith("error: "), (name, r.output)
            assert what in r.output and len(r.output.strip().splitlines()) == 1, r.output
    for value in (deep, "1" * 5000, "{" + dotted + "}"):
        r = runner.invoke(app, ["train", "--plan", "--set", f"train.epochs={value}"])
        assert r.exit_code == 2 and "--set train.epochs=...: the value cannot be read" in r.output
    for text in (deep, "[" + "1" * 5000 + "]"):
        perm = tmp_path / "perm.json"
        perm.write_text(text)
        r = runner.invoke(app, ["shuffle", "--plan", "--set", f'shuffle.perm_file="{perm}"'])
        assert r.exit_code == 2 and "perm.json cannot be read as JSON" in r.output, r.output
        # The same files as results reportgen reads back: damaged, in one line, not trusted.
        from reportgen.files import MissingResults, read_json
        from reportgen.training.rundir import read_results

        with pytest.raises(MissingResults, match="perm.json is damaged"):
            read_json(perm, "train")
        (tmp_path / "run").mkdir(exist_ok=True)
        (tmp_path / "run" / "results.json").write_text(text)
        assert read_results(tmp_path / "run") is None


def test_the_toml_nesting_check_skips_strings_and_comments():
    """Dots, brackets and quotes inside strings and comments are text, not structure: a
    student's paragraphs pass, and the parser's answer is unchanged."""
    from reportgen.config import MAX_TOML_NESTING, parse_toml, toml_shape_problem

    prose = "e.g. [a {b} c]. " * 500
    text = (f'a = """{prose}\n"quoted \\""" end."""\nb = \'{prose}\'\nc = "{prose} \\" ."\n'
            f"d = '''{prose}'''\n# {prose}\n[t.u.v]\nw = [[1.5, 2.5], {{x.y = 3}}]\n")
    assert toml_shape_problem(text) is None
    from reportgen.config import tomllib

    assert parse_toml(text) == tomllib.loads(text)
    ok = ".".join(["k"] * MAX_TOML_NESTING) + " = [" + "[" * (MAX_TOML_NESTING - 2) + "]" * \
        (MAX_TOML_NESTING - 1)
    assert toml_shape_problem(ok) is None and parse_toml(ok)
    assert "line 3 has a key of more than 64" in toml_shape_problem(
        'a = "x"\n\n' + ".".join(["k"] * (MAX_TOML_NESTING + 1)) + " = 1")


@pytest.mark.parametrize("link", ["run", "checkpoints", "runs"])
def test_linked_folders_in_a_copied_output_folder_are_never_written_or_deleted(trained, tmp_path,
                                                                              link):
    """A copied output folder whose run (or its checkpoints, or runs/) is a link elsewhere:
    `--retrain` deleted the target's checkpoints/ and results.json, and training wrote there."""
    overrides, out, run = trained
    victim = tmp_path / "thesis"
    (victim / "checkpoints").mkdir(parents=True)
    (victim / "checkpoints" / "keep.txt").write_text("precious")
    (victim / "results.json").write_text("{}")
    if link == "run":
        run.rename(tmp_path / "moved")
        run.symlink_to(victim)
    elif link == "checkpoints":
        import shutil

        shutil.rmtree(run / "checkpoints")
        (run / "checkpoints").symlink_to(victim / "checkpoints")
    else:
        (out / "runs").rename(tmp_path / "moved")
        (out / "runs").symlink_to(victim)
    before = sorted(p.relative_to(victim) for p in victim.rglob("*"))
    for cmd in (["train", "--retrain"], ["train"], ["rotation"], ["all", "--plan"]):
        r = runner.invoke(app, [cmd[0], *overrides_to_args(overrides), *cmd[1:]])
        assert r.exit_code == 2 and "is a symbolic link (to " in r.output, (cmd, r.output)
        assert len(r.output.strip().splitlines()) == 1
    assert sorted(p.relative_to(victim) for p in victim.rglob("*")) == before
    assert (victim / "checkpoints" / "keep.txt").read_text() == "precious"


def test_a_link_at_a_temporary_name_is_replaced_not_followed(tmp_path):
    import os

    from reportgen.files import atomic_write_text

    target = tmp_path / "elsewhere.txt"
    target.write_text("precious")
    path = tmp_path / "results.json"
    (tmp_path / f".results.tmp-reportgen-{os.getpid()}.json").symlink_to(target)
    atomic_write_text(path, "{}")
    assert target.read_text() == "precious" and path.read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere.txt", "results.json"]


@pytest.mark.slow
def test_the_users_matplotlib_settings_change_no_figure(trained):
    """A matplotlibrc (in the working folder or the user's config) with text.usetex = True
    stopped every figure where LaTeX is not installed, and others changed how figures look;
    MPLBACKEND naming an unknown backend stopped matplotlib's import, before any figure."""
    import os
    import subprocess
    import sys

    import matplotlib

    overrides, out, _ = trained
    r = runner.invoke(app, ["figures", *overrides_to_args(overrides)])
    assert r.exit_code == 0, r.output
    curves = out / "figures" / "practical2" / "part1_learning_curves.png"
    drawn = curves.read_bytes()
    # What a matplotlibrc sets when matplotlib is imported.
    matplotlib.rcParams.update({"text.usetex": True, "lines.linewidth": 20.0,
                                "axes.facecolor": "red", "savefig.dpi": 20})
    try:
        r = runner.invoke(app, ["figures", *overrides_to_args(overrides)])
    finally:
        matplotlib.rcdefaults()
    assert r.exit_code == 0, r.output
    assert curves.read_bytes() == drawn
    env = {**os.environ, "MPLBACKEND": "nonsense"}
    p = subprocess.run([sys.executable, "-m", "reportgen.cli", "figures",
                        *overrides_to_args(overrides)], env=env, capture_output=True, text=True,
                       cwd=pathlib.Path(__file__).parent.parent)
    assert p.returncode == 0, p.stderr
    assert curves.read_bytes() == drawn
