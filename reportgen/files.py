"""Reading and writing the files that connect the stages, and the output folder's lock.

Everything is written to a temporary name and renamed, so a reader (or a crash) never sees
half a file and a failed stage never replaces a good result.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import stat
import sys
from pathlib import Path
from typing import Callable

from .errors import UserError


def atomic_write(path: Path, write: Callable[[Path], None],
                 verify: Callable[[Path], None] | None = None) -> None:
    """Write `path` by calling `write(tmp)` on a temporary name in the same folder, flushing
    it to disk, optionally `verify(tmp)`, then renaming it over `path`.

    The temporary name keeps the suffix, so writers that infer a format from it still work.
    Whatever fails, `path` is either the old file or the complete new one.
    """
    atomic_write_all({path: write}, verify)


def atomic_write_all(writes: dict[Path, Callable[[Path], None]],
                     verify: Callable[[Path], None] | None = None) -> None:
    """`atomic_write` for files that belong together (a .tex and the figures it includes):
    every file is written and flushed under its temporary name first, and only then are all
    renamed into place, so a failure while writing any of them (a full disk) leaves every
    old file as it was, not new figures beside an old .tex."""
    tmps: dict[Path, Path] = {}
    for folder in {Path(p).parent for p in writes}:
        sweep_temporaries(folder)
    try:
        for path, write in writes.items():
            path = Path(path)
            tmp = tmps[path] = path.with_name(f".{path.stem}{_TMP_MARK}{os.getpid()}{path.suffix}")
            # Anything already at the temporary name (left by a crash, or a link planted in a
            # copied output folder) is removed, so the writer creates a new file instead of
            # following it.
            tmp.unlink(missing_ok=True)
            write(tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            if verify is not None:
                verify(tmp)
        for path, tmp in tmps.items():
            os.replace(tmp, path)
    finally:
        for tmp in tmps.values():
            tmp.unlink(missing_ok=True)


# atomic_write_all's temporary names, `.NAME.tmp-reportgen-PID.EXT`: marked as reportgen's,
# so that a sweep never takes a file of the user's (out_dir may be their own folder).
_TMP_MARK = ".tmp-reportgen-"
_TEMPORARY = re.compile(r"^\..+" + re.escape(_TMP_MARK) + r"(\d+)(\.[^.]*)?$")


def sweep_temporaries(folder: Path) -> None:
    """Remove the temporary files that killed processes left in `folder`: a writer killed
    between writing and renaming (SIGKILL, a closed terminal, a power cut) leaves its
    `.NAME.tmp-reportgen-PID.EXT`, and nothing else removes it; for the decoded data cache
    that is 177 MB. A name whose process still runs on this machine is kept (a DDP worker's,
    or this process's own)."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for e in entries:
        m = _TEMPORARY.match(e.name)
        if not m or e.is_dir(follow_symlinks=False) or _alive(int(m.group(1))):
            continue
        try:
            os.unlink(e.path)
        except OSError:
            pass  # another sweep got it first, or a read-only folder: harmless


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):  # another user's process; no pid
        return True
    return True


class LinkedFolder(UserError):
    """A folder reportgen writes into (or deletes from) is a symbolic link."""


def require_real_folders(*paths: Path) -> None:
    """Refuse folders inside the output folder that are symbolic links: a copied output folder
    with `runs/<run> -> ~/thesis` would have had checkpoints and results written there, and
    `--retrain` would have deleted `~/thesis/checkpoints`. The output folder itself may be a
    link; what is inside it must be real."""
    for p in paths:
        if p.is_symlink():
            raise LinkedFolder(f"{p} is a symbolic link (to {os.readlink(p)}): reportgen writes "
                               "runs only into real folders inside the output folder; remove "
                               "the link (or pass another --out)")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def special_kind(st: os.stat_result) -> str | None:
    """'a FIFO', 'a device' or 'a socket' for such a file, else None."""
    return ("a FIFO" if stat.S_ISFIFO(st.st_mode)
            else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
            else "a socket" if stat.S_ISSOCK(st.st_mode) else None)


def missing(path) -> str:
    """Why a path someone named is not there, to follow its name in a message: "does not
    exist", or where the name is a symbolic link that leads nowhere, where it points. `ls`
    shows such a link, so "does not exist" alone sent the user looking at the wrong file,
    and reading through it gave the bare errno line ("[Errno 2] No such file ...")."""
    p = Path(path)
    try:
        target = os.readlink(p)
    except (OSError, ValueError):  # not a link (or a name the system refuses)
        return "does not exist"
    try:
        os.stat(p)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return f"is a symbolic link to {target} that leads back to itself"
        return f"is a symbolic link to {target}, which does not exist"
    return "does not exist"  # made since the caller looked


def link_in_the_way(path) -> Path | None:
    """The first symbolic link that leads nowhere (or in a loop) on the way up from a folder
    to be made, else None: mkdir stops at it with a bare "File exists" (`missing` says why)."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        if p.is_symlink():
            return p
        p = p.parent
    return None


def read_text(path: Path, limit: int = 16 << 20) -> str:
    """The UTF-8 text of a file someone named (an experiment file, the student's text, a
    permutation) or found in an output folder (results). Only a regular file of at most
    `limit` bytes is read: a FIFO would block forever, a device such as /dev/zero never
    ends, and a huge file would fill the memory. Raises OSError saying which (or the file
    system's own), or UnicodeDecodeError. A leading byte-order mark is dropped; one of
    UTF-16 (PowerShell's `>` writes it) is read as such."""
    st = os.stat(path)  # not open(): opening a FIFO blocks until a writer comes
    kind = "a folder" if stat.S_ISDIR(st.st_mode) else special_kind(st)
    if kind:
        raise OSError(f"it is {kind}, not a regular file")
    if st.st_size > limit:
        raise OSError(f"it holds {st.st_size / 2**20:,.0f} MiB, more than the "
                      f"{limit / 2**20:g} MiB such a file can have")
    with open(path, "rb") as f:
        data = f.read(limit + 1)  # a file that grew since the stat still stops here
    if len(data) > limit:
        raise OSError(f"it holds more than the {limit / 2**20:g} MiB such a file can have")
    # utf-8-sig: a leading byte-order mark (Windows Notepad saves UTF-8 with one) is not
    # text; as part of it, an experiment file failed as "Invalid statement (at line 1,
    # column 1)" on a line that looks right.
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):  # UTF-16 with its mark: PowerShell's `>`
        return data.decode("utf-16")
    return data.decode("utf-8-sig")


class MissingResults(UserError, FileNotFoundError):
    """A stage's input is missing or unusable; the message names the command that makes it."""


FIGURE_LIMIT = 64 << 20  # far above any figure reportgen draws (a few hundred KB)


def read_figure(path: Path, magic: bytes) -> bytes:
    """The bytes of a figure `reportgen figures` drew, for embedding or export. A link, a FIFO
    or a file that is not the image it is named as is refused: a figures folder from someone
    else with `part1_learning_curves.png -> ~/.ssh/id_rsa` had that file's bytes embedded in
    the report's HTML (as a broken image), and a FIFO hung the command."""
    redraw = "run `reportgen figures` to draw it again"
    try:  # O_NOFOLLOW: a link is refused by the open itself; O_NONBLOCK: a FIFO never blocks
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise MissingResults(f"figure {path} is missing: run `reportgen figures`") from None
    except OSError:
        kind = "a symbolic link" if os.path.islink(path) else "not a readable file"
        raise MissingResults(f"figure {path} is {kind}, not a figure reportgen drew: {redraw}")
    # Checked on the descriptor before it becomes a file object: fdopen refuses a folder with
    # "Is a directory: 5", a message that named neither the figure nor what to do.
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        if stat.S_ISDIR(mode):  # drawing cannot replace a folder: it has to go first
            raise MissingResults(f"figure {path} is a folder, not a figure reportgen drew: "
                                 "move it away, then run `reportgen figures`")
        raise MissingResults(f"figure {path} is not a regular file, not a figure reportgen "
                             f"drew: {redraw}")
    with os.fdopen(fd, "rb") as f:
        data = f.read(FIGURE_LIMIT + 1)
    kind = Path(path).suffix[1:].upper()
    if len(data) > FIGURE_LIMIT or not data.startswith(magic):
        raise MissingResults(f"figure {path} is not a {kind} that reportgen drew: {redraw}")
    if not _whole_image(data, magic):
        # A figure cut short (a full disk, a copy interrupted) went into the report: WeasyPrint
        # left the figure out with a warning nobody saw, and the PDF was a page short.
        raise MissingResults(f"figure {path} is damaged (cut short or corrupt), not a whole "
                             f"{kind}: {redraw}")
    return data


def _whole_image(data: bytes, magic: bytes) -> bool:
    """A PDF ends with its %%EOF marker; a PNG is read to its end with every chunk's checksum
    verified (Pillow, which matplotlib requires)."""
    if magic.startswith(b"%PDF"):
        return b"%%EOF" in data[-1024:]
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.verify()
    except Exception:  # Pillow's errors for a damaged image are of many kinds
        return False
    return True


def read_json(path: Path, command: str):
    """A results file, or MissingResults naming `reportgen <command>`."""
    path = Path(path)
    if not path.exists():
        raise MissingResults(f"{path} is missing: run `reportgen {command}` first")
    if path.is_dir():  # "missing: run train" sent the user to a command that then could not
        # write it ("Is a directory")
        raise MissingResults(f"{path} is a folder, not a results file: move it away, then run "
                             f"`reportgen {command}`")
    try:
        return json.loads(read_text(path, 256 << 20))
    # ValueError: not UTF-8, not JSON, an integer of over 4,300 digits; RecursionError:
    # arrays nested thousands deep. Either is a damaged file, not a bug.
    except (OSError, ValueError, RecursionError) as e:
        raise MissingResults(f"{path} is damaged ({e}): run `reportgen {command}` again") from e


# --- sealed results: a checksum over the content ------------------------------------------
# The results files are written by reportgen alone, and the figures and the report trust
# their structure. A sha256 of the content, stored with it, tells a file as written from one
# changed afterwards (by hand, a damaged disk, a mix of versions): such a file is refused
# with one line, where a value of the wrong type would otherwise surface deep in a figure as
# a traceback, or a hand-edited number would reach the report as if it came from a run.
CHECKSUM = "checksum"


def _digest(body: dict) -> str:
    # Over the JSON round trip of the body, sorted: exactly what a reader reconstructs.
    text = json.dumps(json.loads(json.dumps(body)), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def seal(results: dict) -> dict:
    """`results` with a CHECKSUM field over the rest of it (see `is_sealed`)."""
    body = {k: v for k, v in results.items() if k != CHECKSUM}
    return {**body, CHECKSUM: _digest(body)}


def is_sealed(results: object) -> bool:
    """Whether `results` (as read from JSON) is unchanged since `seal`."""
    if not isinstance(results, dict) or not isinstance(results.get(CHECKSUM), str):
        return False
    return results[CHECKSUM] == _digest({k: v for k, v in results.items() if k != CHECKSUM})


def file_sha256(path: Path) -> str:
    """The sha256 of a regular file; OSError for anything else (opening a FIFO would block)."""
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise OSError(f"{path} is not a regular file")
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_metrics(path: Path) -> dict[str, list[float]]:
    """A run's metrics.csv as columns (empty cells, i.e. epochs without validation, are NaN)."""
    import io

    import pandas as pd

    from .schema import metrics

    try:
        table = pd.read_csv(io.StringIO(read_text(path)))  # read_text: a FIFO would block
        columns = {str(k): [float(v) for v in col] for k, col in table.items()}
        # What the study's results and figures need of it: a CSV with other columns (or
        # text in a number's place) would be stored and then refused there, on every rerun.
        metrics(columns, "its columns")
        return columns
    # pandas' and decoding errors are ValueErrors (SchemaError is one too).
    except (OSError, ValueError, TypeError) as e:
        raise MissingResults(f"{path} is missing or damaged ({str(e).splitlines()[0][:100]}): "
                             "train that run again (--retrain)") from e


def missing_folders(path: Path) -> list[Path]:
    """`path` and its parents that do not exist yet, innermost first: what a mkdir(parents=True)
    would make, for `remove_empty` to take back."""
    path = Path(path)
    return [p for p in (path, *path.parents) if not os.path.lexists(p)]


def remove_empty(folders: list[Path]) -> None:
    """Remove `folders` (innermost first) while they are empty: a command that stopped before
    writing anything (a typo in --out, no results yet) leaves no empty folders behind."""
    for p in folders:
        try:
            p.rmdir()
        except OSError:  # not empty: something was written
            break


class Busy(UserError, RuntimeError):
    """Another reportgen process is writing into the same output folder."""


class OutputLock:
    """A kernel lock on `OUT/.lock` while a command writes into OUT.

    The operating system releases the lock when its process ends, however it ends, so a
    killed process never leaves a lock behind that two others could both take over. The
    holder's pid and command are kept in `OUT/.lock.owner` for the message a second command
    prints. DDP worker processes (LOCAL_RANK > 0) run under their launcher's lock.
    """

    def __init__(self, out_dir: str | Path):
        self.dir = Path(out_dir)
        self.path = self.dir / ".lock"
        self.owner = self.dir / ".lock.owner"
        self._lock = None
        self._made: list[Path] = []  # folders this lock made, innermost first

    def __enter__(self):
        from filelock import FileLock, Timeout

        if int(os.environ.get("LOCAL_RANK", "0") or 0) > 0:
            return self
        try:
            self._made = missing_folders(self.dir)
            self.dir.mkdir(parents=True, exist_ok=True)
            lock = FileLock(self.path, timeout=0, thread_local=False, is_singleton=False)
            lock.acquire()
        except Timeout:
            try:
                other = json.loads(read_text(self.owner, 1 << 16))
                who = f"pid {other['pid']}: {other['command']}"
            except (OSError, ValueError, KeyError, TypeError, RecursionError):
                who = "its details are not written yet"
            raise Busy(f"{self.dir} is in use by another reportgen ({who}): wait for it to "
                       "finish, or pass another --out") from None
        except OSError as e:  # a file in the folder's place is named before (cli.load_config)
            raise Busy(f"cannot write to {self.dir} ({e.strerror or e}): choose a writable "
                       "--out") from e
        self._lock = lock
        me = {"pid": os.getpid(), "command": " ".join(["reportgen", *sys.argv[1:]])}
        try:
            atomic_write_text(self.owner, json.dumps(me))
        except OSError:
            pass  # the lock holds without its description
        return self

    def __exit__(self, *exc):
        if self._lock is not None:
            self.owner.unlink(missing_ok=True)
            # Unlinked while held, so no other command holds it meanwhile (they take it
            # without waiting, and one that opened this file fails to lock it); the file
            # would otherwise stay in every output folder.
            self.path.unlink(missing_ok=True)
            self._lock.release()
            self._lock = None
            remove_empty(self._made)
