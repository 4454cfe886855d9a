import contextlib
import logging
import os

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(REPO), "shared")
FIXTURES = os.path.join(SHARED, "fixtures", "reference")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def fixtures_dir():
    """The reference fixtures in ../shared (skipped, saying so, where that folder is absent)."""
    if not os.path.isdir(FIXTURES):
        pytest.skip(f"reference fixtures not found at {FIXTURES} (../shared is not beside the repo)")
    return FIXTURES


def config_path(name):
    return os.path.join(REPO, "configs", name)


def error_lines(text):
    """The lines of ``text`` (a tool's stderr) that are one-line errors: those starting 'error:'."""
    return [line for line in text.splitlines() if line.startswith("error:")]


@contextlib.contextmanager
def log_lines(logger_name):
    """The messages (INFO and above) logged to ``logger_name`` inside the block, whichever stream
    its own handlers write to: a list, filled as they come."""
    lines = []

    class _Lines(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    handler = _Lines(logging.INFO)
    logger = logging.getLogger(logger_name)
    logger.addHandler(handler)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
