"""CIFAR-10 sources -> cached uint8 tensors -> the notebook's split -> index batches on the device.

Sources (Krizhevsky 2009, "Learning Multiple Layers of Features from Tiny Images"):
  * torchvision's format: a folder holding `cifar-10-batches-py/` or `cifar-10-python.tar.gz`
    (torchvision's md5 checks apply), downloaded by torchvision when online and missing;
  * an image folder `train/<class>/*`, `test/<class>/*`, as a directory or a .tar, .tar.gz or
    .zip archive (read in place, every member path checked).
Images are decoded once into a uint8 tensor file in the cache, keyed by the source's size and
modification times, so later runs start in seconds.
"""
from __future__ import annotations

import hashlib
import io
import lzma
import os
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .config import CIFAR10_SIZES, DataConfig, full_path_problem, shown, text_problem
from .errors import UserError
from .files import atomic_write, missing, missing_folders, remove_empty

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck")  # CIFAR-10's label order, which is also alphabetical
IMAGE_SIZE = 32
CACHE_VERSION = 2  # 2: the cache records the copy's form
# tarfile reads bzip2 and xz as it reads gzip, checking their trailers (a .tar.xz is how many
# Linux tools pack a folder); before, such a copy was "neither a folder nor an archive".
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tbz", ".tar.xz", ".txz",
                    ".zip")
ARCHIVE_KINDS = ".tar (or .tar.gz, .tar.bz2, .tar.xz) or .zip"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
DEFAULT_ROOT = "data"


class DataError(UserError, ValueError):
    """CIFAR-10 could not be read; the message names the file and says what to do."""


class NotDownloaded(DataError):
    """CIFAR-10 is not at the default place yet and `fetch` was off (a plan downloads nothing)."""

    def __init__(self, path: Path):
        super().__init__(f"CIFAR-10 is not in {path} yet")
        self.path = path


# torchvision's copy: the archive's size in bytes (its images: config.CIFAR10_SIZES).
CIFAR10_ARCHIVE_BYTES = 170_498_071


@dataclass(frozen=True)
class Cifar10:
    """The whole data set as uint8 NCHW tensors and int64 labels."""
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    source: str  # where it came from (a local path: for the appendix, not the Method)
    digest: str  # sha256 of the decoded content: identifies the data in run keys
    form: str = ""  # what kind of copy it is, in words, e.g. "an image-folder copy of JPEG files"


@dataclass(frozen=True)
class Splits:
    """The notebook's train/val split of the training images, plus the test set."""
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor

    def get(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        return getattr(self, f"{split}_x"), getattr(self, f"{split}_y")


# --- locating the source ------------------------------------------------------------------

def resolve_source(source: str, env: dict | None = None) -> tuple[Path, bool]:
    """The data path to use and whether it was given explicitly (--data or REPORTGEN_DATA).
    `source` is data.source, whose ~ DataConfig has expanded already."""
    from .config import expand_user

    env = os.environ if env is None else env
    if source:
        return Path(source), True
    if env.get("REPORTGEN_DATA"):
        return Path(expand_user(env["REPORTGEN_DATA"], "REPORTGEN_DATA")), True
    return Path(DEFAULT_ROOT), False


def _is_archive(p: Path) -> bool:
    return p.is_file() and p.name.lower().endswith(ARCHIVE_SUFFIXES)


def _archive_names(p: Path) -> list[str]:
    try:
        if p.name.lower().endswith(".zip"):
            with zipfile.ZipFile(p) as z:
                return z.namelist()
        with tarfile.open(p) as t:
            return t.getnames()
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, zlib.error,
            lzma.LZMAError) as e:
        raise DataError(f"{p} is truncated or corrupt, or not a tar/zip archive ({_one_line(e)}): "
                        "copy it again or pass --data with an intact CIFAR-10 copy") from e


def detect_kind(p: Path) -> str:
    """'torchvision', 'torchvision-tarball', 'image-folder', 'image-archive' or 'missing'."""
    if p.is_dir():
        if (p / "cifar-10-batches-py").is_dir() or p.name == "cifar-10-batches-py":
            return "torchvision"
        if (p / "cifar-10-python.tar.gz").is_file():
            return "torchvision-tarball"
        if _find_image_root(p) is not None:
            return "image-folder"
        return "missing"
    if _is_archive(p):
        names = _archive_names(p)
        if any(n.split("/")[0] == "cifar-10-batches-py" for n in names):
            return "torchvision-tarball"
        return "image-archive"
    if p.exists():
        raise DataError(f"{p} is neither a folder nor a {ARCHIVE_KINDS} archive: pass --data "
                        "with a CIFAR-10 folder or archive")
    return "missing"


def _find_image_root(p: Path) -> Path | None:
    """`p` where it holds train/ and test/, else its one subfolder that does. Two such
    subfolders (a JPEG and a PNG copy side by side) are an error: the first in sorted order
    was read without a word, while an archive holding two copies merged them."""
    if (p / "train").is_dir() and (p / "test").is_dir():
        return p
    found = [c for c in sorted(p.iterdir()) if c.is_dir() and (c / "train").is_dir()
             and (c / "test").is_dir()]
    if len(found) > 1:
        raise DataError(_two_copies(p, found[0].name, found[1].name))
    return found[0] if found else None


def _two_copies(p: Path, a: str, b: str) -> str:
    a, b = (f"{r}/" if r else "the top level" for r in (a, b))
    fix = ("pack only one of them (or extract the archive and pass --data with one)"
           if p.is_file() else "pass --data with the one to use")
    return f"{p} holds more than one image folder with train/ and test/ ({a} and {b}): {fix}"


def _data_files(p: Path) -> list[Path]:
    """The files that are the data set at `p`: an archive itself; in a folder only the image
    folder's train/ and test/ trees or torchvision's batches and tarball. Anything else in the
    folder (an output folder inside it, notes, caches) is not part of the data."""
    if p.is_file():
        return [p]
    if p.name == "cifar-10-batches-py":
        return sorted(q for q in p.iterdir() if q.is_file())
    files = []
    batches, tarball = p / "cifar-10-batches-py", p / "cifar-10-python.tar.gz"
    if batches.is_dir():
        files += sorted(q for q in batches.iterdir() if q.is_file())
    elif tarball.is_file():
        files.append(tarball)
    root = _find_image_root(p)
    if not files and root is not None:
        for split in ("train", "test"):
            files += sorted(q for q in (root / split).rglob("*") if q.is_file())
    return files


def fingerprint(p: Path) -> str:
    """Cheap identity of a source: paths, sizes and modification times of its data files."""
    # os.fsencode: a file name need not be UTF-8 (one copied from an old Windows drive, say),
    # and str.encode() failed on it with a UnicodeEncodeError traceback.
    h = hashlib.sha256(os.fsencode(p.resolve()))
    for q in _data_files(p):
        st = q.stat()
        h.update(os.fsencode(q.relative_to(p) if q != p else q.name)
                 + f"|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


_FORMAT_NAMES = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".gif": "GIF",
                 ".webp": "WebP", ".tif": "TIFF", ".tiff": "TIFF"}


def describe_form(p: Path, kind: str) -> str:
    """The copy's form in words, for the report's Method section (which names no local path)."""
    if kind.startswith("torchvision"):
        return "the official Python version (torchvision's cifar-10-batches-py)"
    names = _archive_names(p) if p.is_file() else [q.name for q in _data_files(p)]
    counts: dict[str, int] = {}
    for n in names:
        fmt = _FORMAT_NAMES.get(PurePosixPath(n).suffix.lower())
        if fmt:
            counts[fmt] = counts.get(fmt, 0) + 1
    formats = " and ".join(sorted(counts, key=lambda f: -counts[f])) or "image"
    container = ""
    if p.is_file():
        ext = next(e for e in sorted(ARCHIVE_SUFFIXES, key=len, reverse=True)
                   if p.name.lower().endswith(e))
        container = f" in a {ext} archive"
    return f"an image-folder copy of {formats} files{container}"


# --- reading image folders ----------------------------------------------------------------

def _safe_member(name: str, archive: Path) -> PurePosixPath:
    member = PurePosixPath(name.replace("\\", "/"))
    if member.is_absolute() or ".." in member.parts or (member.parts and ":" in member.parts[0]):
        raise DataError(f"{archive} has a member {shown(name)} that would escape the extraction "
                        "folder: refusing to read it; use a trusted copy of CIFAR-10")
    return member


# A CIFAR-10 image is a few KB in any format; a larger "image" is not one. Checked before it
# is read: a 64 GiB sparse file in the folder, or a zip member that inflates to gigabytes,
# filled the memory before its decoding could fail.
MAX_IMAGE_BYTES = 1 << 20


def image_place(name: str) -> tuple[str, str] | None:
    """(split, class) of an image at [any leading folders/]train|test/<class>/<file>, or None
    for any other file (skipped, never read). Hidden files and folders and macOS's
    `__MACOSX/` are never images: a folder zipped by the Finder, or copied through a
    FAT-formatted drive, holds a `._0001.png` of metadata beside each image, and the first
    of them stopped decoding as "not a readable image"."""
    parts = PurePosixPath(name).parts
    if "__MACOSX" in parts:
        return None
    for k in range(len(parts) - 2):
        if parts[k] in ("train", "test") and len(parts) - k == 3:
            image = parts[-1].lower().endswith(IMAGE_SUFFIXES) and not any(
                part.startswith(".") for part in parts[k:])  # a hidden folder above is fine
            return (parts[k], parts[k + 1]) if image else None
    return None


def _require_image_size(name: str, size: int) -> None:
    if size > MAX_IMAGE_BYTES:
        raise DataError(f"{name} holds {size:,} bytes, more than any 32x32 image needs "
                        f"({MAX_IMAGE_BYTES:,} at most): remove or replace it")


def _iter_archive(p: Path) -> Iterator[tuple[str, bytes]]:
    """(member name, bytes) of every image member (`image_place`) of a tar or zip archive,
    read to the archive's true end: a tar must close with its end-of-archive marker, and a
    compressed stream is read to its trailer so that its checksum is verified."""
    try:
        if p.name.lower().endswith(".zip"):
            with zipfile.ZipFile(p) as z:
                for info in z.infolist():
                    # Older Windows tools wrote zip paths with backslashes (cifar\train\...).
                    name = _safe_member(info.filename, p).as_posix()
                    if not info.is_dir() and image_place(name):
                        # zipfile reads no more than the declared size, so this bounds it
                        _require_image_size(f"{p}:{name}", info.file_size)
                        yield name, _read_zip_member(z, info, p, name)
            return
        with tarfile.open(p) as t:
            for m in t:
                _safe_member(m.name, p)
                if m.issym() or m.islnk():
                    raise DataError(f"{p} has a link member {shown(m.name)}: refusing to follow "
                                    "it; use a trusted copy of CIFAR-10")
                if m.isfile() and image_place(m.name):
                    _require_image_size(f"{p}:{m.name}", m.size)
                    f = t.extractfile(m)
                    data = f.read() if f else b""
                    if len(data) != m.size:
                        raise EOFError(f"member {m.name} ends after {len(data)} of {m.size} bytes")
                    yield m.name, data
            _check_tar_end(t)
    # lzma.LZMAError (not an OSError): a damaged .tar.xz, or a damaged zip member packed with
    # LZMA; it ended the command in a traceback.
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, zlib.error,
            lzma.LZMAError) as e:
        raise DataError(f"{p} is truncated or corrupt ({type(e).__name__}: {_one_line(e)}): "
                        "copy it again or pass --data with an intact CIFAR-10 copy") from e


def _read_zip_member(z: zipfile.ZipFile, info: zipfile.ZipInfo, p: Path, name: str) -> bytes:
    """A member's bytes, its CRC-32 checked. A member with a password, or packed with a method
    Python's zipfile lacks (AES from 7-Zip or WinZip, PPMd, ...), raised RuntimeError or
    NotImplementedError, which ended the command in a traceback."""
    repack = ("pack the folder again as a plain .zip (without a password) or a .tar.gz, or "
              "pass --data with the extracted folder")
    try:
        return z.read(info)
    except NotImplementedError:  # a RuntimeError too: first
        raise DataError(f"{p}: member {shown(name)} is compressed with a method Python cannot "
                        f"read (zip method {info.compress_type}): {repack}") from None
    except RuntimeError as e:  # zipfile's "is encrypted, password required for extraction"
        if "encrypted" not in str(e):
            raise
        raise DataError(f"{p}: member {shown(name)} is encrypted (the archive has a password): "
                        f"{repack}") from None


def _check_tar_end(t: tarfile.TarFile) -> None:
    """tarfile stops quietly at a missing or cut header; a complete archive ends with two
    zero blocks. Read what follows the last member to the end of the (decompressed) stream,
    which also makes gzip verify its CRC-32 and length."""
    f = t.fileobj
    f.seek(t.offset)
    rest = f.read()  # a few blocks of padding; reading to EOF also checks gzip's trailer
    if len(rest) < 2 * tarfile.BLOCKSIZE or any(rest[:2 * tarfile.BLOCKSIZE]):
        raise EOFError("no end-of-archive marker after the last member")


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def _iter_folder(root: Path) -> Iterator[tuple[str, bytes]]:
    """(relative name, bytes) of every image file (`image_place`) under root; FIFOs, devices
    and sockets are skipped (is_file), and no file larger than an image is read."""
    for q in sorted(root.rglob("*")):
        name = q.relative_to(root).as_posix()
        if image_place(name) and q.is_file():
            _require_image_size(name, q.stat().st_size)
            yield name, q.read_bytes()


def _decode(blob: bytes, name: str) -> torch.Tensor:
    from PIL import Image

    if not blob:
        raise DataError(f"{name} is empty (0 bytes): remove or replace it")
    try:
        with Image.open(io.BytesIO(blob)) as img:
            if img.size != (IMAGE_SIZE, IMAGE_SIZE):  # known from the header, before decoding
                raise DataError(f"{name} is {img.size[0]}x{img.size[1]} pixels, not 32x32: "
                                "CIFAR-10 images are 32x32; remove or replace it")
            if img.mode in ("I", "F") or img.mode.startswith("I;16"):
                # PIL's conversion to RGB clips such values at 255: a 16-bit grey image
                # became pure white, silently.
                raise DataError(f"{name} has more than 8 bits per pixel (PIL mode {img.mode}): "
                                "CIFAR-10 images are 8-bit; convert it to 8-bit RGB, or "
                                "remove it")
            img.load()
            # Grayscale, palette and RGBA images are converted to RGB (alpha is dropped).
            rgb = img.convert("RGB") if img.mode != "RGB" else img
            data = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8)
    except DataError:
        raise
    except Exception as e:  # any image-library error (incl. DecompressionBombError) is the file's
        reason = _one_line(e).replace(repr(getattr(e, "filename", None) or ""), "")
        if "BytesIO" in reason:
            reason = "not an image file the Python Imaging Library can identify"
        raise DataError(f"{name} is not a readable image ({type(e).__name__}: {reason}): "
                        "remove or replace it") from e
    return data.view(IMAGE_SIZE, IMAGE_SIZE, 3).permute(2, 0, 1)


def read_image_folder(p: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Decode `train/<class>/*` and `test/<class>/*` from a folder or an archive."""
    items = _iter_archive(p) if p.is_file() else _iter_folder(_find_image_root(p) or p)
    # class -> member name -> bytes: a name twice in a tar (appended with `tar -r`) is the
    # later member, as extracting it gives, not the same image counted twice.
    found: dict[str, dict[str, dict[str, bytes]]] = {"train": {}, "test": {}}
    roots: list[str] = []
    for name, blob in items:
        # Any leading folder (e.g. cifar10-jpeg/) may come before train|test/<class>/<file>,
        # but only one: an archive holding two copies trained on each image twice.
        split, cls = image_place(name)
        root = "/".join(PurePosixPath(name).parts[:-3])
        if root not in roots:
            roots.append(root)
            if len(roots) > 1:
                raise DataError(_two_copies(p, *roots))
        found[split].setdefault(cls, {})[name] = blob
    out = []
    for split in ("train", "test"):
        classes = set(found[split])
        if not classes:
            raise DataError(f"{p} has no {split}/<class>/ images: an image folder needs "
                            "train/<class>/*.jpg and test/<class>/*.jpg")
        unknown, missing = sorted(classes - set(CLASSES)), [c for c in CLASSES if c not in classes]
        if unknown:
            raise DataError(f"{p}: {split}/ has unknown class folder(s) {', '.join(unknown)}: "
                            f"CIFAR-10's classes are {', '.join(CLASSES)}")
        if missing:
            raise DataError(f"{p}: {split}/ lacks class folder(s) {', '.join(missing)} (or they "
                            "are empty): copy the complete data set")
        xs, ys = [], []
        for label, cls in enumerate(CLASSES):
            for name, blob in sorted(found[split][cls].items()):
                xs.append(_decode(blob, f"{p}:{name}" if p.is_file() else name))
                ys.append(label)
        out += [torch.stack(xs), torch.tensor(ys, dtype=torch.int64)]
    return out[0], out[1], out[2], out[3]


# --- torchvision's format ------------------------------------------------------------------

def _download(root: Path) -> None:
    """torchvision's download of CIFAR-10 (its URL, its md5 check, its extraction) into a
    temporary folder inside `root`, moved into place only when complete. Downloaded in place,
    a download cut short (Ctrl-C, a dropped connection) left a partial cifar-10-python.tar.gz
    that every later run refused as failing the md5 check, with advice to download again that
    reportgen then never did."""
    import shutil

    import torchvision.datasets.cifar as tvc

    tmp = root / ".download-partial"
    shutil.rmtree(tmp, ignore_errors=True)  # left by a process that was killed
    try:
        tvc.download_and_extract_archive(tvc.CIFAR10.url, str(tmp),
                                         filename=tvc.CIFAR10.filename, md5=tvc.CIFAR10.tgz_md5)
        for name in (tvc.CIFAR10.base_folder, tvc.CIFAR10.filename):
            if (tmp / name).exists():
                os.replace(tmp / name, root / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_torchvision(root: Path, download: bool, cache_dir: Path) -> tuple[torch.Tensor, ...]:
    """Read torchvision's CIFAR10 from `root`, extracting a tarball into the cache if needed."""
    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import check_integrity, extract_archive

    if root.name == "cifar-10-batches-py":
        root = root.parent
    named = root.is_file()
    if named:  # the official tarball itself
        tarball, root = root, root.parent
    else:
        tarball = root / "cifar-10-python.tar.gz"
    # An archive named with --data is what is read, even beside an extracted folder: before,
    # the folder was read instead, and its damaged batch was named to a user who had passed
    # the archive.
    if tarball.is_file() and (named or not (root / "cifar-10-batches-py").is_dir()):
        if not check_integrity(str(tarball), CIFAR10.tgz_md5) and tarball.name != CIFAR10.filename:
            # A copy packed again (a zip, a .tar.xz of cifar-10-batches-py/) cannot match the
            # official archive's md5: "corrupt, download it again" sent the user to download
            # what they had.
            raise DataError(f"{tarball} holds torchvision's cifar-10-batches-py/ but is not "
                            f"the official {CIFAR10.filename} (which reportgen checks by its "
                            "md5): extract it and pass --data with the folder that holds "
                            "cifar-10-batches-py/, or pass the official archive")
        if not check_integrity(str(tarball), CIFAR10.tgz_md5):
            again = ("delete it and run the command again to download it anew" if download
                     else "download it again")  # a folder the user named is never written
            raise DataError(f"{tarball} fails torchvision's md5 check (corrupt or incomplete): "
                            f"{again}, or pass --data with an intact copy")
        for name in _archive_names(tarball):  # readable, and no member escapes
            _safe_member(name, tarball)
        root = cache_dir / "torchvision"
        root.mkdir(parents=True, exist_ok=True)
        extract_archive(str(tarball), str(root))
    batches = root / "cifar-10-batches-py"
    if batches.is_dir() or not download:
        # Name the first missing or damaged file (torchvision only says "not found or corrupted").
        for name, md5 in CIFAR10.train_list + CIFAR10.test_list:
            f = batches / name
            if not f.is_file():
                raise DataError(f"{f} is missing: copy the complete cifar-10-batches-py folder "
                                "or pass --data with an intact CIFAR-10 copy")
            if not check_integrity(str(f), md5):
                raise DataError(f"{f} fails torchvision's md5 check (damaged or incomplete): "
                                "copy it again or pass --data with an intact CIFAR-10 copy")
    try:
        if download and not batches.is_dir():
            _download(root)
        parts = []
        for train in (True, False):
            ds = CIFAR10(str(root), train=train, download=False)
            parts += [torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(),
                      torch.tensor(ds.targets, dtype=torch.int64)]
    except RuntimeError as e:  # torchvision: "Dataset not found or corrupted."
        raise DataError(f"CIFAR-10 in {root} is missing or fails torchvision's md5 check ({e}): "
                        "download it again, or pass --data with an intact copy") from e
    except OSError as e:  # offline download, full disk, unreadable files
        raise DataError(f"could not read or download CIFAR-10 into {root} ({e}): put "
                        "cifar-10-python.tar.gz or an image folder there, or pass --data PATH "
                        "(or set REPORTGEN_DATA)") from e
    return tuple(parts)


# --- loading with a cache ------------------------------------------------------------------

def _content_digest(parts) -> str:
    h = hashlib.sha256()
    for t in parts:
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _check_tensors(train_x, train_y, test_x, test_y, where: str) -> None:
    for name, x, y in (("train", train_x, train_y), ("test", test_x, test_y)):
        if x.dtype != torch.uint8 or x.ndim != 4 or tuple(x.shape[1:]) != (3, 32, 32):
            raise DataError(f"{where}: {name} images have shape {tuple(x.shape)} {x.dtype}, "
                            "expected N x 3 x 32 x 32 uint8")
        if y.shape != (x.shape[0],) or y.min() < 0 or y.max() >= len(CLASSES):
            raise DataError(f"{where}: {name} labels do not match the images or CIFAR-10's "
                            "10 classes")


PER_CLASS = {"train": 5000, "test": 1000}  # CIFAR-10's images per class and split


def check_counts(parts, path: Path, partial: bool) -> None:
    """CIFAR-10 has 5,000 training and 1,000 test images per class; anything else is an
    incomplete or foreign copy, allowed only with data.partial = true."""
    if partial:
        return
    for split, y in (("train", parts[1]), ("test", parts[3])):
        counts = torch.bincount(y, minlength=len(CLASSES)).tolist()
        for cls, n in zip(CLASSES, counts):
            if n != PER_CLASS[split]:
                raise DataError(f"{path}: {split}/ has {n:,} images of class {cls}, CIFAR-10 has "
                                f"{PER_CLASS[split]:,}: copy the complete data set, or set "
                                "data.partial = true to use a partial copy")


def _save(blob: dict, path: Path) -> None:
    # Through a file object that Python opens: given a path, torch.save opens it itself and a
    # folder it cannot write to (data.cache_dir = '/proc') is a RuntimeError, not an OSError.
    with open(path, "wb") as f:
        torch.save(blob, f)


def _read_cache(cache: Path, key: str, path: Path, log) -> Cifar10 | None:
    """The cached tensors of source `path`, or None (a damaged cache is reported and ignored)."""
    if not cache.is_file():
        return None
    try:
        blob = torch.load(cache, weights_only=True)
        if blob.get("version") != CACHE_VERSION or blob.get("fingerprint") != key:
            raise ValueError("it belongs to another source or version")
        cached = [blob[k] for k in ("train_x", "train_y", "test_x", "test_y")]
        _check_tensors(*cached, where=str(cache))
        if _content_digest(cached) != blob["digest"]:
            raise ValueError("its content does not match its checksum")
        return Cifar10(*cached, source=str(path), digest=blob["digest"], form=blob["form"])
    except Exception as e:  # any damage to the cache: rebuild it from the source
        log(f"cache {cache} is unusable ({e}); decoding {path} again")
        return None


def load_cifar10(cfg: DataConfig, env: dict | None = None, log=print,
                 fetch: bool = True) -> Cifar10:
    """Find, decode (once) and return CIFAR-10; raises DataError with what to do.
    fetch False: where it would be downloaded, NotDownloaded is raised instead."""
    path, explicit = resolve_source(cfg.source, env)
    # How the user named it, in every message: the option, or the environment variable.
    named = f"--data {path}" if cfg.source or not explicit else f"REPORTGEN_DATA={path}"
    if explicit and not cfg.source:
        problem = text_problem(str(path))
        if problem:
            raise DataError(f"REPORTGEN_DATA={str(path)!r} contains {problem}: fix the "
                            "variable, or pass --data")
    problem = full_path_problem(str(path))
    if problem:
        raise DataError(f"{named if explicit else 'the data folder ' + str(path)} {problem}")
    if explicit and not path.exists():
        raise DataError(f"{named} {missing(path)}: pass the folder or archive that holds "
                        "CIFAR-10 (e.g. ../shared/data/cifar10-jpeg.tar)")
    if path.exists() and not (path.is_dir() or path.is_file()):
        raise DataError(f"{named} is neither a folder nor a file (a FIFO, a device or a "
                        "socket): pass the folder or archive that holds CIFAR-10 (e.g. "
                        "../shared/data/cifar10-jpeg.tar)")
    cache_dir = Path(cfg.cache_dir)
    # The cache is keyed by the source's file stats, so a cached start never opens the
    # source (listing the members of a 90 MB archive alone takes a second).
    if path.exists():
        key = fingerprint(path)
        hit = _read_cache(cache_dir / f"cifar10-{key}.pt", key, path, log)
        if hit is not None:
            check_counts((hit.train_x, hit.train_y, hit.test_x, hit.test_y), path, cfg.partial)
            return hit
    kind = detect_kind(path)
    if kind == "missing" and explicit:
        if path.is_dir() and ((path / "train").is_dir() or (path / "test").is_dir()):
            lacking = "test/" if (path / "train").is_dir() else "train/"
            raise DataError(f"{named} lacks {lacking}: an image folder needs both "
                            "train/<class>/ and test/<class>/ (nothing was downloaded)")
        # The train/ or test/ folder, or a class folder in one, named for the image folder.
        for part, above in ((path, path.parent), (path.parent, path.parent.parent)):
            if (path.is_dir() and part.name in ("train", "test") and (above / "train").is_dir()
                    and (above / "test").is_dir()):
                raise DataError(f"{named} is a part of the image folder {above}: pass --data "
                                f"{above}")
        raise DataError(f"{named} holds no CIFAR-10: it needs train/<class>/ and "
                        "test/<class>/ image folders, cifar-10-batches-py/ or "
                        "cifar-10-python.tar.gz (nothing is downloaded into a folder you name; "
                        "without --data reportgen downloads into ./data)")
    if kind == "missing":
        if not cfg.download:
            raise DataError(f"no CIFAR-10 found at {path} and downloads are off: put "
                            "cifar-10-python.tar.gz or an image folder there, or pass --data PATH")
        if not fetch:
            raise NotDownloaded(path)
        log(f"CIFAR-10 not found in {path}: downloading it with torchvision ...")
        made = missing_folders(path)
        path.mkdir(parents=True, exist_ok=True)
        try:
            parts = read_torchvision(path, True, cache_dir)
        except BaseException:
            remove_empty(made)  # offline: no empty ./data left behind in the user's folder
            raise
    else:
        log(f"decoding CIFAR-10 from {path} (once; cached in {cache_dir}) ...")
        if kind in ("image-folder", "image-archive"):
            parts = read_image_folder(path)
        else:  # a folder the user named is read, never downloaded into
            parts = read_torchvision(path, cfg.download and not explicit, cache_dir)
    check_counts(parts, path, cfg.partial)
    key = fingerprint(path)  # after a download, of the downloaded files
    cache = cache_dir / f"cifar10-{key}.pt"
    _check_tensors(*parts, where=str(path))
    digest = _content_digest(parts)
    form = describe_form(path, "torchvision" if kind == "missing" else kind)
    blob = {"version": CACHE_VERSION, "fingerprint": key, "digest": digest, "source": str(path),
            "form": form,
            "train_x": parts[0], "train_y": parts[1], "test_x": parts[2], "test_y": parts[3]}
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(cache, lambda tmp: _save(blob, tmp))
    except OSError as e:  # a cache is a convenience: say so and go on
        log(f"could not write the cache {cache} ({e}); the next run will decode again")
    return Cifar10(*parts, source=str(path), digest=digest, form=form)


def split_indices(n: int, val_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The notebook's `random_split(..., [45000, 5000], generator=manual_seed(42))` as indices."""
    from torch.utils.data import random_split

    train, val = random_split(range(n), [n - val_size, val_size],
                              generator=torch.Generator().manual_seed(seed))
    return torch.tensor(train.indices, dtype=torch.int64), torch.tensor(val.indices, dtype=torch.int64)


def _check_split(n: int, cfg: DataConfig) -> int:
    """The training images left of `n` after the validation hold-out and data.subset."""
    if cfg.val_size >= n:
        raise DataError(f"data.val_size = {cfg.val_size} leaves no training images out of {n}")
    left = n - cfg.val_size
    if cfg.subset > left:
        raise DataError(f"data.subset = {cfg.subset} is more than the {left} training images "
                        f"left after holding out {cfg.val_size} for validation: use at most "
                        f"{left}, or 0 for all")
    return cfg.subset or left


def make_splits(data: Cifar10, cfg: DataConfig) -> Splits:
    n = data.train_x.shape[0]
    _check_split(n, cfg)
    tr, va = split_indices(n, cfg.val_size, cfg.split_seed)
    if cfg.subset:
        tr = tr[: cfg.subset]  # the split is already a random order, so this is a random subset
    return Splits(data.train_x[tr], data.train_y[tr], data.train_x[va], data.train_y[va],
                  data.test_x, data.test_y)


def expected_splits(cfg: DataConfig) -> Splits:
    """Splits of the sizes torchvision's CIFAR-10 will give, before it is downloaded (for a
    plan): every image a zero that takes no memory (one value, expanded)."""
    def images(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.zeros((), dtype=torch.uint8).expand(n, 3, 32, 32),
                torch.zeros((), dtype=torch.int64).expand(n))

    return Splits(*images(_check_split(CIFAR10_SIZES["train"], cfg)), *images(cfg.val_size),
                  *images(CIFAR10_SIZES["test"]))


# --- batches of indices, gathered on the device --------------------------------------------

class _Indices(Dataset):
    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i

    def __getitems__(self, idx: list[int]) -> list[int]:
        return idx


class EpochSampler(Sampler[int]):
    """A shuffled order that depends only on (seed, epoch), so a resumed run sees the same batches."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:  # Lightning calls this at every epoch start
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())


class _Gather:
    """Collate: a list of indices -> (uint8 images, labels) gathered where the tensors live."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def __call__(self, idx: list[int]):
        if self.x.device.type == "cuda":
            # From pageable memory an "async" copy may wait for the stream to drain (CUDA's
            # API synchronisation notes), which would stop the host from queueing the next
            # step while the card works on this one. Pinned blocks come from PyTorch's caching
            # host allocator, which keeps each one until its copy has finished.
            i = torch.tensor(idx, dtype=torch.int64, pin_memory=True)
        else:
            i = torch.as_tensor(idx, dtype=torch.int64)
        i = i.to(self.x.device, non_blocking=True)
        return self.x.index_select(0, i), self.y.index_select(0, i)


def batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle_seed: int | None = None,
            drop_last: bool = False) -> DataLoader:
    """A DataLoader over in-memory tensors, without workers (the data is already decoded).

    It is a real DataLoader so that Lightning can put a DistributedSampler in it under DDP.
    """
    sampler = EpochSampler(len(x), shuffle_seed) if shuffle_seed is not None else None
    return DataLoader(_Indices(len(x)), batch_size=batch_size, sampler=sampler,
                      drop_last=drop_last, collate_fn=_Gather(x, y), num_workers=0)
