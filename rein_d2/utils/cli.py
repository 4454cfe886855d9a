"""What the command-line tools share: one kind of error for input the user can fix, printed
as one line instead of a traceback with one exit status (``EXIT_REFUSED``), and a guard against
writing over an input file."""
import errno
import functools
import os
import re
import sys
from typing import Callable, Iterable, Optional, Union

__all__ = ["EXIT_REFUSED", "UserError", "exit_on_user_error", "one_line", "refuse_overwrite",
           "reclaim_overrides"]

CONFIG_KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)+$")  # MODEL.WEIGHTS, SOLVER.BASE_LR ...

# The exit status of every rein_d2 tool that refuses its input or skips some of it (as argparse
# does for a bad flag); 1 is left to crashes (a Python traceback), 0 is success.
EXIT_REFUSED = 2

# errors that mean "the disk (or the quota, or the file-size limit) is full"
SPACE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
# errors only a write gives, which the user can fix: no space, a read-only file system
_WRITE_ERRNOS = SPACE_ERRNOS | {errno.EROFS}


class UserError(ValueError):
    """Bad input the user can fix. The message names the file or key, what is wrong and what
    to do; the tools print it as one line and exit with EXIT_REFUSED."""


def one_line(e: BaseException) -> str:
    """The message of ``e`` on one line. An error raised in a DataLoader worker arrives wrapped
    in the worker's traceback ("Caught ValueError in DataLoader worker process 0. Original
    Traceback ..."): its last line is the original message."""
    text = str(e)
    if "Original Traceback" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return " ".join(text.split())


def _write_error_line(e: OSError) -> str:
    from .files import write_failure  # (files imports this module)

    return str(write_failure(e.filename or "an output file", e, atomic=False))


def exit_on_user_error(main: Callable[..., Optional[int]]) -> Callable[..., int]:
    """Wrap a tool's ``main``: a UserError, or a write that fails for want of space or on a
    read-only file system, becomes ``error: <message>`` on stderr and exit status EXIT_REFUSED."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs) or 0
        except UserError as e:
            print(f"error: {one_line(e)}", file=sys.stderr)
        except OSError as e:
            if e.errno not in _WRITE_ERRNOS:
                raise
            print(f"error: {_write_error_line(e)}", file=sys.stderr)
        return EXIT_REFUSED

    return wrapper


def _identity(path: str):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def refuse_overwrite(outputs: Union[str, Iterable[str]], inputs: Iterable[str],
                     flag: str = "--output", instead: str = "") -> None:
    """Raise if writing any of ``outputs`` (a path or paths of files the tool will write,
    including secondary ones) would replace one of ``inputs`` (the files it reads: images,
    weights, configs): the same path, or the same file through a link or another spelling
    (compared by device and inode). ``instead``: what to pass, when the tool knows better than
    "another path"."""
    outputs = [outputs] if isinstance(outputs, str) else list(outputs)
    by_path, by_id = {}, {}
    for path in filter(None, inputs):
        by_path.setdefault(os.path.realpath(path), path)
        ident = _identity(path)
        if ident is not None:
            by_id.setdefault(ident, path)
    clashes = []
    for out in filter(None, outputs):
        src = by_path.get(os.path.realpath(out))
        if src is None and by_id:
            src = by_id.get(_identity(out))
        if src is not None:
            clashes.append((out, src))
    if clashes:
        out, src = clashes[0]
        more = f" (and {len(clashes) - 1} more)" if len(clashes) > 1 else ""
        raise UserError(f"{flag} would write {out}, which is the input {src}{more}: writing it would "
                        f"replace the input; {instead or f'give {flag} another path'}")


def reclaim_overrides(args, *names: str):
    """Config overrides swallowed by a list option (``--input a.jpg MODEL.WEIGHTS w.pth``)
    go back to ``args.opts``: everything from the first item that looks like a config key
    (upper case with dots). Returns ``args``."""
    for name in names:
        values = getattr(args, name, None) or []
        for i, item in enumerate(values):
            if CONFIG_KEY.match(str(item)):
                args.opts = list(values[i:]) + list(args.opts)
                setattr(args, name, list(values[:i]))
                break
    return args
