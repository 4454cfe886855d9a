"""One training run per OUTPUT_DIR: a lock file holding the owner's pid and host. Two runs in
one folder would replace each other's checkpoints and mix their log.txt and metrics.json."""
import atexit
import contextlib
import glob
import os
import socket
import time

from ..utils.cli import UserError

__all__ = ["OutputDirLocked", "lock_output_dir", "LOCK_NAME"]

LOCK_NAME = ".rein_d2_train.lock"


class OutputDirLocked(UserError):
    """OUTPUT_DIR is held by another training run that is (or may be) alive."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _read(path: str) -> dict:
    try:
        with open(path) as f:
            return dict(line.split("=", 1) for line in f.read().splitlines() if "=" in line)
    except OSError:
        return {}


def lock_output_dir(output_dir: str) -> str:
    """Take OUTPUT_DIR for this process (released when it exits) and return the lock file.

    A lock left by a run that died on this host (its pid is gone) is taken over, saying so; a
    lock of a live run, or of a run on another host (whose pid cannot be checked from here), is
    refused in one line naming the owner. Temporary files of a killed run are removed."""
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, LOCK_NAME)
    host = socket.gethostname()
    for _ in range(3):  # a stale lock is removed, then taken again
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = _read(path)
            pid = int(owner["pid"]) if owner.get("pid", "").isdigit() else 0
            if owner.get("host") == host and pid == os.getpid():
                return path  # this process took it already
            if owner.get("host") == host and pid and not _alive(pid):
                print(f"note: {path} was left by run pid {pid}, which is gone; taking OUTPUT_DIR over")
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)
                continue
            if not owner:  # being written this instant, or emptied: look once more
                time.sleep(0.2)
                owner = _read(path)
            where = (f"pid {owner.get('pid', '?')} on host {owner.get('host', '?')}, since "
                     f"{owner.get('started', '?')}")
            raise OutputDirLocked(
                f"OUTPUT_DIR {output_dir} is in use by another training run ({where}; lock file "
                f"{path}): wait for it to end, or set another OUTPUT_DIR; if that run is gone "
                "(e.g. on another machine), delete the lock file") from None
        with os.fdopen(fd, "w") as f:
            f.write(f"pid={os.getpid()}\nhost={host}\nstarted={time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        atexit.register(_release, path, os.getpid())
        for stale in glob.glob(os.path.join(glob.escape(output_dir), ".*.tmp")):  # a killed save
            with contextlib.suppress(OSError):
                os.remove(stale)
        return path
    raise OutputDirLocked(f"could not take the lock file {path}: delete it if no run uses {output_dir}")


def _release(path: str, pid: int) -> None:
    if _read(path).get("pid") == str(pid):
        with contextlib.suppress(OSError):
            os.remove(path)
