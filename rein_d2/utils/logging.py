"""Log files without terminal colour codes.

detectron2 writes ANSI escape codes into OUTPUT_DIR/log.txt, even though its file handler has
a plain formatter: the codes are inside the messages. ``default_setup`` logs the config file
and the full config highlighted by pygments whatever the output is (thousands of codes), and
fvcore's checkpoint key lists and detectron2's class histogram are coloured with termcolor
when stdout is a terminal. ``setup_logging`` is tools/train_net.py's logger setup with those
codes kept out of every log that does not go to a terminal; the terminal keeps detectron2's
coloured prefixes (only the config dump loses its highlighting).
"""
import contextlib
import logging
import re

__all__ = ["ANSI_ESCAPE", "PlainFormatter", "plain_log_files", "setup_logging", "strip_ansi"]

# CSI sequences (colours, bold, blink: ESC [ ... letter) and the rarer two-byte escapes.
ANSI_ESCAPE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")
LOGGERS = ("detectron2", "fvcore", "rein_d2")  # the loggers setup_logger points at log.txt


def strip_ansi(text: str) -> str:
    return ANSI_ESCAPE.sub("", text)


class PlainFormatter(logging.Formatter):
    """A handler's own formatter, with ANSI escape codes removed from what it formats."""

    def __init__(self, inner: logging.Formatter = None):
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        return strip_ansi(self.inner.format(record))


def _writes_to_terminal(handler: logging.Handler) -> bool:
    stream = getattr(handler, "stream", None)
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def plain_log_files(names=LOGGERS) -> int:
    """Make the handlers of the loggers ``names`` that do not write to a terminal (log.txt, a
    stdout redirected to a file) drop ANSI codes; returns how many were changed. Calling it
    again changes nothing."""
    changed = 0
    for name in names:
        for handler in logging.getLogger(name).handlers:
            if not isinstance(handler.formatter, PlainFormatter) and not _writes_to_terminal(handler):
                handler.setFormatter(PlainFormatter(handler.formatter))
                changed += 1
    return changed


@contextlib.contextmanager
def _config_not_highlighted():
    """default_setup creates log.txt's handler and logs the pygments-highlighted config in the
    same call, before any handler can be changed: so it logs the config as plain text."""
    from detectron2.engine import defaults

    original = getattr(defaults, "_highlight", None)
    if original is None:  # another detectron2 version: nothing to switch off
        yield
        return
    defaults._highlight = lambda code, filename: code
    try:
        yield
    finally:
        defaults._highlight = original


def setup_logging(cfg, args) -> logging.Logger:
    """detectron2's ``default_setup(cfg, args)`` then ``setup_logger`` for rein_d2 into
    cfg.OUTPUT_DIR, as tools/train_net.py does, with no ANSI codes in log.txt. Returns the
    rein_d2 logger."""
    from detectron2.engine import default_setup
    from detectron2.utils import comm
    from detectron2.utils.logger import setup_logger

    with _config_not_highlighted():
        default_setup(cfg, args)
    logger = setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="rein_d2")
    plain_log_files()
    return logger
