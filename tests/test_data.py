"""Every CIFAR-10 source, built from tiny generated files; no network."""
import io
import os
import re
import tarfile
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from reportgen import data as D
from reportgen.config import DataConfig

from helpers import (N_TEST_PER_CLASS, N_TRAIN_PER_CLASS, make_tar, patch_torchvision_md5,
                      write_torchvision_batches)


def cfg(source, tmp_path, **kw):
    return DataConfig(source=str(source), partial=True, cache_dir=str(tmp_path / "cache"),
                      val_size=10, **kw)


def check_tiny(ds, n_train=10 * N_TRAIN_PER_CLASS, n_test=10 * N_TEST_PER_CLASS):
    assert ds.train_x.shape == (n_train, 3, 32, 32) and ds.train_x.dtype == torch.uint8
    assert ds.test_x.shape == (n_test, 3, 32, 32)
    assert sorted(set(ds.train_y.tolist())) == list(range(10))


def test_image_folder_directory_keeps_pixels_and_class_order(image_folder, tmp_path):
    ds = D.load_cifar10(cfg(image_folder, tmp_path), env={})
    check_tiny(ds)
    # Label k is CIFAR-10's class k, and pixels are exactly those written (PNG is lossless).
    first_cat = sorted((image_folder / "train" / "cat").iterdir())[0]
    arr = torch.from_numpy(np.array(Image.open(first_cat))).permute(2, 0, 1)
    i = (ds.train_y == D.CLASSES.index("cat")).nonzero()[0, 0]
    assert torch.equal(ds.train_x[i], arr)


@pytest.mark.parametrize("suffix,mode", [(".tar", "w"), (".tar.gz", "w:gz"), (".tar.bz2", "w:bz2"),
                                         (".tar.xz", "w:xz")])
def test_image_folder_tar(image_folder, tmp_path, suffix, mode):
    arc = make_tar(image_folder, tmp_path / f"c{suffix}", mode=mode)
    direct = D.load_cifar10(cfg(image_folder, tmp_path / "a"), env={})
    ds = D.load_cifar10(cfg(arc, tmp_path / "b"), env={})
    check_tiny(ds)
    assert torch.equal(ds.train_x, direct.train_x) and ds.digest == direct.digest


def test_image_folder_zip(image_folder, tmp_path):
    arc = tmp_path / "c.zip"
    with zipfile.ZipFile(arc, "w") as z:
        for p in image_folder.rglob("*.png"):
            z.write(p, "cifar/" + p.relative_to(image_folder).as_posix())
    check_tiny(D.load_cifar10(cfg(arc, tmp_path), env={}))


def test_zip_with_windows_backslash_paths(image_folder, tmp_path):
    """Older Windows tools wrote zip member paths with backslashes: such an archive was
    "no train/<class>/ images"."""
    arc = tmp_path / "win.zip"
    with zipfile.ZipFile(arc, "w") as z:
        for p in sorted(image_folder.rglob("*.png")):
            z.write(p, "cifar\\" + "\\".join(p.relative_to(image_folder).parts))
    assert "\\" in zipfile.ZipFile(arc).namelist()[0]
    ds = D.load_cifar10(cfg(arc, tmp_path / "zip"), env={})
    clean = D.load_cifar10(cfg(image_folder, tmp_path / "clean"), env={})
    assert torch.equal(ds.train_x, clean.train_x) and torch.equal(ds.test_y, clean.test_y)


def test_macos_metadata_and_hidden_files_are_not_images(image_folder, tmp_path):
    """A folder zipped by macOS's Finder holds __MACOSX/ with a `._<name>` of metadata per
    file, and a copy through a FAT-formatted drive leaves `._<name>` beside each image: the
    first of them stopped decoding as "not a readable image". Hidden files are skipped, and
    the data equal the clean copy's."""
    import shutil

    clean = D.load_cifar10(cfg(image_folder, tmp_path / "clean"), env={})
    mac = tmp_path / "mac"
    shutil.copytree(image_folder, mac)
    apple = b"\x00\x05\x16\x07" + b"\x00" * 60  # AppleDouble's magic number, then junk
    for p in sorted(mac.rglob("*.png")):
        (p.parent / f"._{p.name}").write_bytes(apple)
    (mac / "train" / ".DS_Store").write_bytes(b"junk")
    (mac / "train" / "cat" / ".hidden.png").write_bytes(b"junk")
    ds = D.load_cifar10(cfg(mac, tmp_path / "folder"), env={})
    assert torch.equal(ds.train_x, clean.train_x) and torch.equal(ds.test_y, clean.test_y)
    arc = tmp_path / "finder.zip"
    with zipfile.ZipFile(arc, "w") as z:
        for p in sorted(mac.rglob("*")):
            if p.is_file():
                rel = p.relative_to(mac).as_posix()
                z.write(p, "cifar/" + rel)
                z.writestr(f"__MACOSX/cifar/{rel.rsplit('/', 1)[0]}/._{p.name}", apple)
    ds = D.load_cifar10(cfg(arc, tmp_path / "zip"), env={})
    assert torch.equal(ds.train_x, clean.train_x) and torch.equal(ds.test_y, clean.test_y)
    # A hidden folder above the image folder is only where the copy lives.
    assert D.image_place(".data/cifar/train/cat/0001.png") == ("train", "cat")


def test_a_file_name_that_is_not_utf8_is_no_traceback(image_folder, tmp_path):
    """A file whose name is not UTF-8 (copied from an old Windows drive) beside the images
    ended the source's fingerprint in a UnicodeEncodeError traceback; as an image that cannot
    be read it is named."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(image_folder, copy)
    with open(os.fsencode(copy / "train" / "cat") + b"/notes\xff.txt", "wb") as f:
        f.write(b"not an image, not read")
    clean = D.load_cifar10(cfg(image_folder, tmp_path / "clean"), env={})
    ds = D.load_cifar10(cfg(copy, tmp_path / "out"), env={})
    assert torch.equal(ds.train_x, clean.train_x)
    with open(os.fsencode(copy / "train" / "cat") + b"/bad\xff.png", "wb") as f:
        f.write(b"not an image")
    # (The name as Python holds it, with the byte as a surrogate: stderr prints it as \udcff.)
    with pytest.raises(D.DataError, match="train/cat/bad\udcff.png is not a readable image"):
        D.load_cifar10(cfg(copy, tmp_path / "out2"), env={})


@pytest.mark.parametrize("mode", ["I;16", "I", "F"])
def test_an_image_of_more_than_8_bits_is_named_not_clipped_white(image_folder, tmp_path, mode):
    """PIL converts 16-bit grey (and 32-bit integer or float) pixels to RGB by clipping at
    255: a 16-bit copy of an image decoded as pure white, silently."""
    import io
    import shutil

    import numpy as np
    from PIL import Image

    copy = tmp_path / "copy"
    shutil.copytree(image_folder, copy)
    grey = np.full((32, 32), 3000, dtype={"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode])
    img = Image.fromarray(grey)
    assert img.mode == mode
    buf = io.BytesIO()
    img.save(buf, format="PNG" if mode == "I;16" else "TIFF")  # PNG has no 32-bit modes
    name = "deep.png" if mode == "I;16" else "deep.tif"
    (copy / "train" / "cat" / name).write_bytes(buf.getvalue())
    with pytest.raises(D.DataError, match=rf"train/cat/{name} has more than 8 bits per pixel "
                                          rf"\(PIL mode {re.escape(mode)}\): CIFAR-10 images are "
                                          "8-bit; convert it"):
        D.load_cifar10(cfg(copy, tmp_path / "out"), env={})


def test_torchvision_batches_folder(tmp_path, monkeypatch):
    d = write_torchvision_batches(tmp_path / "tv")
    patch_torchvision_md5(monkeypatch, d)
    ds = D.load_cifar10(cfg(tmp_path / "tv", tmp_path), env={})
    check_tiny(ds, n_train=100, n_test=20)


def test_torchvision_batches_fail_integrity(tmp_path, monkeypatch):
    d = write_torchvision_batches(tmp_path / "tv")
    patch_torchvision_md5(monkeypatch, d)
    (d / "data_batch_3").write_bytes(b"damaged")
    with pytest.raises(D.DataError, match="md5"):
        D.load_cifar10(cfg(tmp_path / "tv", tmp_path, download=False), env={})


def _official_tarball(tmp_path: Path, monkeypatch) -> Path:
    """src/cifar-10-python.tar.gz of tiny batches, which torchvision's md5 check accepts."""
    d = write_torchvision_batches(tmp_path / "build")
    tgz = tmp_path / "src" / "cifar-10-python.tar.gz"
    tgz.parent.mkdir()
    with tarfile.open(tgz, "w:gz") as t:
        t.add(d, arcname="cifar-10-batches-py")
    patch_torchvision_md5(monkeypatch, d, tgz)
    return tgz


def test_torchvision_tarball(tmp_path, monkeypatch):
    tgz = _official_tarball(tmp_path, monkeypatch)
    ds = D.load_cifar10(cfg(tgz.parent, tmp_path), env={})
    check_tiny(ds, n_train=100, n_test=20)
    assert not (tgz.parent / "cifar-10-batches-py").exists()  # extracted into the cache instead


def test_a_named_tarball_is_read_even_beside_an_extracted_folder(tmp_path, monkeypatch):
    """`--data .../cifar-10-python.tar.gz` read the cifar-10-batches-py/ folder beside it
    instead, and named that folder's damaged batch to a user who had passed the archive."""
    tgz = _official_tarball(tmp_path, monkeypatch)
    beside = tgz.parent / "cifar-10-batches-py"
    beside.mkdir()
    (beside / "data_batch_1").write_bytes(b"damaged")
    ds = D.load_cifar10(cfg(tgz, tmp_path / "out"), env={})
    check_tiny(ds, n_train=100, n_test=20)


def test_download_when_missing_uses_torchvision(tmp_path, monkeypatch):
    """The download path calls torchvision's downloader; here it is replaced by a local copy."""
    import torchvision.datasets.cifar as tvc

    src = write_torchvision_batches(tmp_path / "mirror")
    patch_torchvision_md5(monkeypatch, src)
    calls = []

    def fake_download(url, download_root, filename=None, md5=None, **kw):
        calls.append(url)
        Path(download_root).mkdir(parents=True, exist_ok=True)  # as torchvision does
        os.rename(src, Path(download_root) / "cifar-10-batches-py")

    monkeypatch.setattr(tvc, "download_and_extract_archive", fake_download)
    monkeypatch.chdir(tmp_path)
    ds = D.load_cifar10(DataConfig(cache_dir="cache", val_size=10, partial=True), env={},
                        log=lambda m: None)
    check_tiny(ds, n_train=100, n_test=20)
    assert calls and "cifar-10-python.tar.gz" in calls[0]
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["cifar-10-batches-py"]


def test_a_download_cut_short_leaves_nothing_that_stops_the_next(tmp_path, monkeypatch):
    """torchvision writes the archive in place: a download cut short left a partial
    cifar-10-python.tar.gz that every later run refused ("fails torchvision's md5 check"),
    telling the user to download again, which reportgen then never did."""
    import torchvision.datasets.cifar as tvc

    src = write_torchvision_batches(tmp_path / "mirror")
    patch_torchvision_md5(monkeypatch, src)

    def cut_short(url, download_root, filename=None, md5=None, **kw):
        Path(download_root).mkdir(parents=True, exist_ok=True)
        (Path(download_root) / filename).write_bytes(b"the first 32 KiB")
        raise KeyboardInterrupt

    def complete(url, download_root, filename=None, md5=None, **kw):
        Path(download_root).mkdir(parents=True, exist_ok=True)
        os.rename(src, Path(download_root) / "cifar-10-batches-py")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tvc, "download_and_extract_archive", cut_short)
    (tmp_path / "data").mkdir()  # made by the user: kept
    with pytest.raises(KeyboardInterrupt):
        D.load_cifar10(DataConfig(cache_dir="cache", partial=True), env={}, log=lambda m: None)
    assert list((tmp_path / "data").iterdir()) == []
    monkeypatch.setattr(tvc, "download_and_extract_archive", complete)
    ds = D.load_cifar10(DataConfig(cache_dir="cache", val_size=10, partial=True), env={},
                        log=lambda m: None)
    check_tiny(ds, n_train=100, n_test=20)
    # A damaged archive where reportgen downloads (an older version's partial file): the
    # advice is to delete it, which makes the next run download it.
    tmp2 = tmp_path / "other"
    (tmp2 / "data").mkdir(parents=True)
    (tmp2 / "data" / "cifar-10-python.tar.gz").write_bytes(b"partial")
    monkeypatch.chdir(tmp2)
    with pytest.raises(D.DataError, match="fails torchvision's md5 check .*: delete it and run "
                                          "the command again to download it anew"):
        D.load_cifar10(DataConfig(cache_dir="cache", partial=True), env={}, log=lambda m: None)


def test_offline_without_data_says_what_to_do(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as tvc

    def offline(*a, **kw):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(tvc, "download_and_extract_archive", offline)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(D.DataError, match=r"could not read or download CIFAR-10.*--data"):
        D.load_cifar10(DataConfig(cache_dir="cache"), env={}, log=lambda m: None)
    assert not (tmp_path / "data").exists()  # the folder made for the download is gone
    with pytest.raises(D.DataError, match="downloads are off.*--data"):
        D.load_cifar10(DataConfig(cache_dir="cache", download=False), env={})


def test_env_variable_gives_default_source(image_folder, tmp_path):
    path, explicit = D.resolve_source("", {"REPORTGEN_DATA": str(image_folder)})
    assert path == image_folder and explicit
    assert D.resolve_source("", {}) == (Path("data"), False)
    assert D.resolve_source("x", {"REPORTGEN_DATA": "y"})[0] == Path("x")


def test_errors_name_the_environment_variable_that_chose_the_source(tmp_path):
    """A source from REPORTGEN_DATA is named as that variable, not as an --data never typed;
    a control character in it is refused like one in any setting."""
    import os

    base = DataConfig(cache_dir=str(tmp_path / "cache"))
    for value, what in ((str(tmp_path / "nope"), "does not exist"),
                        (os.devnull, "is neither a folder nor a file"),
                        (str(tmp_path), "holds no CIFAR-10")):
        with pytest.raises(D.DataError, match=f"^REPORTGEN_DATA={value} {what}"):
            D.load_cifar10(base, env={"REPORTGEN_DATA": value})
    with pytest.raises(D.DataError, match=r"^REPORTGEN_DATA='/tmp/a\\x01b' contains the control "
                                          r"character U\+0001"):
        D.load_cifar10(base, env={"REPORTGEN_DATA": "/tmp/a\x01b"})
    with pytest.raises(D.DataError, match=f"^--data {tmp_path / 'x'} does not exist"):
        D.load_cifar10(cfg(tmp_path / "x", tmp_path), env={"REPORTGEN_DATA": os.devnull})


def test_missing_explicit_path(tmp_path):
    with pytest.raises(D.DataError, match="does not exist"):
        D.load_cifar10(cfg(tmp_path / "nope", tmp_path), env={})


def test_cache_is_used_and_rebuilt_when_damaged(image_folder, tmp_path, monkeypatch):
    c = cfg(image_folder, tmp_path)
    first = D.load_cifar10(c, env={})
    cache_files = list((tmp_path / "cache").glob("cifar10-*.pt"))
    assert len(cache_files) == 1

    def boom(*a):
        raise AssertionError("decoded again despite a valid cache")

    monkeypatch.setattr(D, "read_image_folder", boom)
    assert D.load_cifar10(c, env={}).digest == first.digest
    monkeypatch.undo()
    cache_files[0].write_bytes(b"garbage")
    msgs = []
    again = D.load_cifar10(c, env={}, log=msgs.append)
    assert again.digest == first.digest and any("unusable" in m for m in msgs)


@pytest.mark.parametrize("where", ["/proc", "/dev/null", "{tmp}/file"])
def test_a_cache_folder_that_cannot_be_written_is_reported_and_skipped(image_folder, tmp_path,
                                                                       where):
    """data.cache_dir = '/proc' (a folder no file can be created in) ended in torch.save's
    RuntimeError traceback; '/dev/null' and a regular file, in mkdir's error. The cache is a
    convenience: the data still load, and the message names the cache."""
    (tmp_path / "file").write_text("x")
    c = replace(cfg(image_folder, tmp_path), cache_dir=where.format(tmp=tmp_path))
    msgs = []
    ds = D.load_cifar10(c, env={}, log=msgs.append)
    check_tiny(ds)
    assert any(m.startswith("could not write the cache") and "decode again" in m for m in msgs)
    assert (tmp_path / "file").read_text() == "x"


def test_missing_and_unknown_classes(image_folder, tmp_path):
    import shutil

    (image_folder / "train" / "horses").mkdir()
    Image.new("RGB", (32, 32)).save(image_folder / "train" / "horses" / "x.png")
    with pytest.raises(D.DataError, match="unknown class folder.*horses"):
        D.read_image_folder(image_folder)
    shutil.rmtree(image_folder / "train" / "horses")
    shutil.rmtree(image_folder / "test" / "frog")
    with pytest.raises(D.DataError, match="test/ lacks class folder.*frog"):
        D.read_image_folder(image_folder)


def test_corrupt_archive(image_folder, tmp_path):
    arc = make_tar(image_folder, tmp_path / "c.tar.gz", mode="w:gz")
    blob = arc.read_bytes()
    arc.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(D.DataError, match="c.tar.gz is (truncated or corrupt|not a readable archive)"):
        D.load_cifar10(cfg(arc, tmp_path), env={})


def _zip_of(folder: Path, arc: Path, method=zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(arc, "w", compression=method) as z:
        for p in sorted(folder.rglob("*.png")):
            z.write(p, p.relative_to(folder).as_posix())
    return arc


def _patch_headers(arc: Path, change) -> None:
    """Apply `change(blob, offset, central)` at every local and central zip header."""
    blob = bytearray(arc.read_bytes())
    for sig, central in ((b"PK\x03\x04", False), (b"PK\x01\x02", True)):
        i = blob.find(sig)
        while i >= 0:
            change(blob, i, central)
            i = blob.find(sig, i + 4)
    arc.write_bytes(bytes(blob))


def test_a_zip_with_a_password_or_an_unknown_method_is_named(image_folder, tmp_path):
    """zipfile raised RuntimeError ("encrypted, password required") or NotImplementedError
    (AES, method 99, as 7-Zip and WinZip write it), which ended the command in a traceback."""
    enc = _zip_of(image_folder, tmp_path / "enc.zip")

    def encrypted(blob, i, central):
        blob[i + (8 if central else 6)] |= 1  # general-purpose flag bit 0: encrypted

    _patch_headers(enc, encrypted)
    with pytest.raises(D.DataError, match=r"enc.zip: member '.*\.png' is encrypted \(the archive "
                       r"has a password\): pack the folder again as a plain .zip"):
        D.read_image_folder(enc)
    aes = _zip_of(image_folder, tmp_path / "aes.zip")

    def method_99(blob, i, central):
        blob[i + (10 if central else 8)] = 99

    _patch_headers(aes, method_99)
    with pytest.raises(D.DataError, match=r"aes.zip: member '.*\.png' is compressed with a "
                       r"method Python cannot read \(zip method 99\)"):
        D.read_image_folder(aes)


@pytest.mark.parametrize("kind", ["lzma zip", "tar.xz"])
def test_a_damaged_lzma_stream_is_named_as_damaged(kind, image_folder, tmp_path):
    """lzma's error is not an OSError: a damaged .tar.xz, or a damaged zip member packed with
    LZMA, ended the command in a traceback."""
    if kind == "tar.xz":
        arc = make_tar(image_folder, tmp_path / "c.tar.xz", mode="w:xz")
    else:
        arc = _zip_of(image_folder, tmp_path / "c.zip", zipfile.ZIP_LZMA)
    blob = bytearray(arc.read_bytes())
    start = len(blob) // 2 if kind == "tar.xz" else 60  # inside the (first) compressed stream
    for k in range(start, start + 64):
        blob[k] ^= 0x5A
    arc.write_bytes(bytes(blob))
    with pytest.raises(D.DataError, match=f"{arc.name} is truncated or corrupt"):
        D.load_cifar10(cfg(arc, tmp_path), env={})


def test_archive_member_escaping_is_refused(tmp_path):
    arc = tmp_path / "evil.tar"
    with tarfile.open(arc, "w") as t:
        info = tarfile.TarInfo("../../etc/evil.jpg")
        info.size = 3
        t.addfile(info, io.BytesIO(b"abc"))
    with pytest.raises(D.DataError, match="escape the extraction folder"):
        D.read_image_folder(arc)


def test_bad_images_are_named_or_converted(image_folder):
    bad = image_folder / "train" / "cat" / "0000.png"
    Image.new("RGB", (28, 28)).save(bad)
    with pytest.raises(D.DataError, match=r"0000.png is 28x28 pixels"):
        D.read_image_folder(image_folder)
    bad.write_bytes(b"not an image")
    with pytest.raises(D.DataError, match="0000.png is not a readable image"):
        D.read_image_folder(image_folder)
    # Grayscale and RGBA are converted to RGB (documented).
    Image.new("L", (32, 32), color=77).save(bad)
    Image.new("RGBA", (32, 32), color=(1, 2, 3, 4)).save(image_folder / "train" / "cat" / "0001.png")
    x, y, _, _ = D.read_image_folder(image_folder)
    cats = x[y == D.CLASSES.index("cat")]
    assert (cats[0] == 77).all() and cats[1][:, 0, 0].tolist() == [1, 2, 3]


def test_split_is_reproducible_and_matches_random_split():
    from torch.utils.data import random_split

    tr, va = D.split_indices(50000, 5000, 42)
    ref = random_split(range(50000), [45000, 5000], generator=torch.Generator().manual_seed(42))
    assert tr.tolist() == list(ref[0].indices) and va.tolist() == list(ref[1].indices)
    assert len(set(tr.tolist()) | set(va.tolist())) == 50000
    tr2, _ = D.split_indices(50000, 5000, 42)
    assert torch.equal(tr, tr2)
    assert not torch.equal(D.split_indices(50000, 5000, 43)[0], tr)


def test_subset_takes_first_of_split(image_folder, tmp_path):
    ds = D.load_cifar10(cfg(image_folder, tmp_path), env={})
    full = D.make_splits(ds, cfg(image_folder, tmp_path))
    sub = D.make_splits(ds, cfg(image_folder, tmp_path, subset=7))
    assert len(sub.train_x) == 7 and torch.equal(sub.train_x, full.train_x[:7])
    assert torch.equal(sub.val_x, full.val_x)


def test_batches_cover_each_epoch_once_in_a_new_order():
    x = torch.arange(20, dtype=torch.uint8).view(20, 1, 1, 1).expand(20, 3, 32, 32).contiguous()
    y = torch.arange(20)
    dl = D.batches(x, y, 5, shuffle_seed=1, drop_last=True)
    dl.sampler.set_epoch(0)
    e0 = torch.cat([b[1] for b in dl])
    dl.sampler.set_epoch(1)
    e1 = torch.cat([b[1] for b in dl])
    assert sorted(e0.tolist()) == list(range(20)) == sorted(e1.tolist())
    assert e0.tolist() != e1.tolist()
    dl.sampler.set_epoch(0)
    assert torch.cat([b[1] for b in dl]).tolist() == e0.tolist()  # same epoch, same order
    xb, yb = next(iter(dl))
    assert torch.equal(xb[:, 0, 0, 0].long(), yb)


@pytest.mark.parametrize("name", ["cifar.zip", "cifar.tar.xz"])
def test_torchvision_batches_packed_again_are_named_not_called_corrupt(name, tmp_path):
    """A zip or .tar.xz of cifar-10-batches-py/ cannot match the official archive's md5; it
    was called corrupt, with advice to download it again."""
    batches = tmp_path / "src" / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    (batches / "data_batch_1").write_bytes(b"not a pickle")
    arc = tmp_path / name
    if name.endswith(".zip"):
        with zipfile.ZipFile(arc, "w") as z:
            z.write(batches / "data_batch_1", "cifar-10-batches-py/data_batch_1")
    else:
        with tarfile.open(arc, "w:xz") as t:
            t.add(batches, "cifar-10-batches-py")
    with pytest.raises(D.DataError, match=f"{name} holds torchvision's cifar-10-batches-py/ but "
                       "is not the official cifar-10-python.tar.gz .*: extract it and pass --data"):
        D.load_cifar10(cfg(arc, tmp_path / "out"), env={})


def test_two_copies_in_one_folder_or_archive_are_refused(image_folder, tmp_path):
    """A folder holding two copies read the first in sorted order without a word; an archive
    holding two merged them, so every image was trained on twice (and the test set held each
    test image twice)."""
    import shutil

    both = tmp_path / "both"
    shutil.copytree(image_folder, both / "jpeg")
    shutil.copytree(image_folder, both / "png")
    with pytest.raises(D.DataError, match=r"both holds more than one image folder with train/ and "
                       r"test/ \(jpeg/ and png/\): pass --data with the one to use"):
        D.load_cifar10(cfg(both, tmp_path / "a"), env={})
    arc = tmp_path / "both.tar"
    with tarfile.open(arc, "w") as t:
        t.add(image_folder, "cifar")  # cifar/train/..., and the same again at the top level
        for split in ("train", "test"):
            t.add(image_folder / split, split)
    with pytest.raises(D.DataError, match=r"both.tar holds more than one image folder .*"
                       r"\(cifar/ and the top level\): pack only one of them"):
        D.load_cifar10(cfg(arc, tmp_path / "b"), env={})
    check_tiny(D.load_cifar10(cfg(both / "png", tmp_path / "c"), env={}))


def test_a_member_appended_twice_to_a_tar_is_one_image(image_folder, tmp_path):
    """`tar -r` appends a member of the same name again; extracting keeps the later one, and
    reading it counted the image twice."""
    arc = make_tar(image_folder, tmp_path / "c.tar", mode="w")
    with tarfile.open(arc, "a") as t:
        for p in sorted((image_folder / "train" / "cat").iterdir()):
            t.add(p, "cifar10-tiny/train/cat/" + p.name)
    assert len([n for n in tarfile.open(arc).getnames() if "/train/cat/" in n]) > \
        len(list((image_folder / "train" / "cat").iterdir()))
    direct = D.load_cifar10(cfg(image_folder, tmp_path / "a"), env={})
    ds = D.load_cifar10(cfg(arc, tmp_path / "b"), env={})
    assert torch.equal(ds.train_y, direct.train_y) and ds.digest == direct.digest


@pytest.mark.parametrize("part", ["train", "test/dog"])
def test_a_part_of_an_image_folder_names_the_folder_to_pass(part, image_folder, tmp_path):
    """`--data cifar/train` (or a class folder) said the folder "holds no CIFAR-10"."""
    with pytest.raises(D.DataError, match=f"{image_folder / part} is a part of the image folder "
                       f"{image_folder}: pass --data {image_folder}$"):
        D.load_cifar10(cfg(image_folder / part, tmp_path), env={})
