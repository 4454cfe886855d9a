"""What the command-line tools share: one kind of error for input the user can fix, printed
as one line instead of a traceback, and a guard against writing over an input file."""
import functools
import os
import re
import sys
from typing import Callable, Iterable, Optional

__all__ = ["UserError", "exit_on_user_error", "refuse_overwrite", "reclaim_overrides"]

CONFIG_KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)+$")  # MODEL.WEIGHTS, SOLVER.BASE_LR ...


class UserError(ValueError):
    """Bad input the user can fix. The message names the file or key, what is wrong and what
    to do; the tools print it as one line and exit non-zero."""


def exit_on_user_error(main: Callable[..., Optional[int]]) -> Callable[..., int]:
    """Wrap a tool's ``main``: a UserError becomes ``error: <message>`` on stderr and exit 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs) or 0
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2

    return wrapper


def refuse_overwrite(output: str, inputs: Iterable[str], flag: str = "--output") -> None:
    """Raise if writing ``output`` would replace one of ``inputs`` (same path or same file)."""
    out = os.path.realpath(output)
    for path in filter(None, inputs):
        same = os.path.realpath(path) == out or (
            os.path.exists(path) and os.path.exists(output) and os.path.samefile(path, output))
        if same:
            raise UserError(f"{flag} {output} is the input file {path}: writing it would replace "
                            f"the input; give {flag} another path")


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
