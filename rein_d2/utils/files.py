"""Writing a user's outputs so that none is lost, torn or silently empty: files go to a unique
temporary name in their folder, are flushed to disk and checked, then renamed; a failed write
(full disk, quota, read-only folder) becomes one line with the space needed and free, and
leaves nothing under the final name."""
import contextlib
import csv
import errno
import io
import json
import os
import shutil
import tempfile
from typing import Iterator, Optional

import cv2
import numpy as np

from .cli import SPACE_ERRNOS, UserError

__all__ = ["IMAGE_EXTENSIONS", "OutputWriteError", "disk_space", "os_error_of", "save_figure_atomic",
           "space_errors_name", "staged_files", "write_bytes_atomic", "write_csv_atomic", "write_failure",
           "write_image_atomic", "write_json_atomic"]


# file name endings of the images a folder input is searched for (demo, predict)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


class OutputWriteError(UserError, OSError):
    """An output could not be written; nothing was left under its final name."""


def disk_space(path: str) -> str:
    """"N MiB are free in <folder>" for the folder ``path`` is (or would be) in."""
    folder = os.path.dirname(os.path.abspath(path))
    while folder and not os.path.isdir(folder):
        folder = os.path.dirname(folder)
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return f"the free space in {folder} is unknown"
    return f"{_size(free)} are free in {folder}"


def _size(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"  # one unit, to compare "needs" with "free" at a glance


def os_error_of(e: BaseException) -> Optional[OSError]:
    """The OSError behind ``e``: ``e`` itself or one in its cause / context chain (torch.save's
    ``RuntimeError: [enforce fail at inline_container.cc ...]`` carries the EFBIG / ENOSPC of the
    failed write as its context)."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, OSError):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def write_failure(path: str, e: BaseException, needed: Optional[int] = None,
                  what: str = "", then: str = "rerun", atomic: bool = True) -> OutputWriteError:
    """The one-line error for a failed write of ``path``: why, the space needed and free
    (``atomic``: the write went through a temporary file, so nothing is under that name)."""
    cause = os_error_of(e)
    why = (cause.strerror or str(cause)) if cause is not None else " ".join(str(e).split()[:12])
    need = f"it needs about {_size(needed)} and " if needed else ""
    full = cause is not None and cause.errno in SPACE_ERRNOS
    todo = f"free space, then {then}" if full or cause is None else f"check that you can write there, then {then}"
    kept = "nothing was written under that name: " if atomic else ""
    return OutputWriteError(f"could not write {what}{path}: {why}; {need}{disk_space(path)}; {kept}{todo}")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:  # a file system that accepts nothing without saying why
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[n:]


def write_bytes_atomic(path: str, data: bytes, check=None) -> None:
    """Write ``data`` to ``path`` through a unique temporary file in its folder, fsync it, read it
    back and compare, then rename. ``check(data)``, when given, must hold before anything is
    written (e.g. encoded image bytes decode). On any failure the temporary file is removed,
    ``path`` is untouched, and an OutputWriteError says why."""
    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        if check is not None and not check(data):
            raise OSError(errno.EIO, "the encoded data does not decode")
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
        try:
            _write_all(fd, data)
            os.fsync(fd)  # a delayed-allocation file system reports ENOSPC here, not at write
        finally:
            os.close(fd)
        with open(tmp, "rb") as f:
            back = f.read()
        if back != data:
            raise OSError(errno.EIO, f"the file read back is not what was written ({len(back)} of "
                                     f"{len(data)} bytes)")
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise write_failure(path, e, len(data)) from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.remove(tmp)


def _decodable(data: bytes) -> bool:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) is not None


def write_image_atomic(path: str, array: np.ndarray) -> None:
    """Encode ``array`` (OpenCV's channel order) in memory in the format of ``path``'s suffix
    and write it atomically, checked to decode (cv2.imwrite reports success on a full disk and
    leaves a 0-byte file under the final name)."""
    ok, buf = cv2.imencode(os.path.splitext(path)[1] or ".png", np.ascontiguousarray(array))
    if not ok:
        raise OutputWriteError(f"could not encode an image of shape {array.shape}, {array.dtype} for {path}")
    write_bytes_atomic(path, buf.tobytes(), check=_decodable)


def write_json_atomic(path: str, data) -> None:
    """``data`` as indented JSON, written atomically (a results file is whole or absent)."""
    write_bytes_atomic(path, json.dumps(data, indent=2).encode("utf-8"))


def write_csv_atomic(path: str, rows) -> None:
    """``rows`` (header first) as CSV, written atomically."""
    text = io.StringIO(newline="")
    csv.writer(text).writerows(rows)
    write_bytes_atomic(path, text.getvalue().encode("utf-8"))


def save_figure_atomic(fig, path: str, dpi: int = 100) -> None:
    """A matplotlib figure, rendered in memory in the format of ``path``'s suffix and written
    atomically (a PNG or JPEG checked to decode)."""
    buf = io.BytesIO()
    fig.savefig(buf, format=os.path.splitext(path)[1][1:] or "png", dpi=dpi)
    image = path.lower().endswith((".png", ".jpg", ".jpeg"))
    write_bytes_atomic(path, buf.getvalue(), check=_decodable if image else None)


@contextlib.contextmanager
def staged_files(final_dir: str, names) -> Iterator[str]:
    """A temporary folder in ``final_dir`` to write the files ``names`` (the main file first,
    then its companions) in; when the block ends without an error they are moved to
    ``final_dir`` (the old files of those names are removed first, then the new ones are renamed in order, so that a kill between the steps leaves a
    missing file, never an old file beside a new companion). On an error nothing is moved and
    the folder is removed."""
    os.makedirs(final_dir, exist_ok=True)
    stage = tempfile.mkdtemp(prefix=".staging.", dir=final_dir)
    try:
        yield stage
        made = [n for n in names if os.path.exists(os.path.join(stage, n))]
        for n in names:  # (an old companion the new file does not use goes too)
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(final_dir, n))
        for n in reversed(made):  # companions (the .data) before the file that names them
            os.replace(os.path.join(stage, n), os.path.join(final_dir, n))
    finally:
        shutil.rmtree(stage, ignore_errors=True)


@contextlib.contextmanager
def space_errors_name(folder: str, then: str = "rerun"):
    """Inside the block, a write that fails for want of space (a full disk, a quota, a file-size
    limit) becomes the one-line OutputWriteError naming ``folder`` and its free space (a failed
    ``f.write`` names no file)."""
    try:
        yield
    except OSError as e:
        if isinstance(e, OutputWriteError) or e.errno not in SPACE_ERRNOS:
            raise
        raise write_failure(e.filename or os.path.join(folder, ""), e, then=then, atomic=False) from None
