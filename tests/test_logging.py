"""rein_d2.utils.logging: OUTPUT_DIR/log.txt free of ANSI colour codes, the terminal coloured."""
import argparse
import io
import logging

import pytest
from detectron2.utils.logger import setup_logger

from conftest import config_path
from rein_d2 import load_config
from rein_d2.utils.logging import LOGGERS, PlainFormatter, plain_log_files, setup_logging, strip_ansi

BLUE = "\x1b[34mmodel.head.weight\x1b[0m"  # as fvcore's coloured checkpoint key lists


class _Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture
def loggers(monkeypatch):
    """Give back detectron2 / fvcore / rein_d2's loggers as they were (setup_logger is cached,
    adds handlers and turns propagation off); skip default_setup's environment report."""
    import detectron2.engine.defaults as defaults
    monkeypatch.setattr(defaults, "collect_env_info", lambda: "environment report skipped")
    saved = {n: (logging.getLogger(n), list(logging.getLogger(n).handlers), logging.getLogger(n).propagate,
                 logging.getLogger(n).level) for n in LOGGERS}
    setup_logger.cache_clear()
    yield
    for logger, handlers, propagate, level in saved.values():
        for h in logger.handlers:
            if h not in handlers and str(getattr(h.stream, "name", "")).endswith("log.txt"):
                h.stream.close()  # this test's log file (one per tmp_path)
        logger.handlers, logger.propagate = handlers, propagate
        logger.setLevel(level)
    setup_logger.cache_clear()


def test_log_txt_has_no_ansi_codes_and_the_terminal_keeps_them(tmp_path, loggers):
    cfg = load_config(config_path("rein_dinov2.yaml"), ["OUTPUT_DIR", str(tmp_path)])
    cfg.freeze()
    args = argparse.Namespace(config_file=config_path("rein_dinov2.yaml"), eval_only=False,
                              resume=False, num_gpus=1, opts=[])
    terminal = logging.StreamHandler(_Terminal())
    logging.getLogger("rein_d2").addHandler(terminal)

    setup_logging(cfg, args)
    logging.getLogger("rein_d2.engine.trainer").warning("missing keys: %s", BLUE)
    logging.getLogger("fvcore.common.checkpoint").info("unexpected keys: " + BLUE)
    for name in LOGGERS:
        for h in logging.getLogger(name).handlers:
            if not getattr(getattr(h, "stream", None), "closed", False):  # earlier tests' captures
                h.flush()

    log = (tmp_path / "log.txt").read_text()
    assert "Running with full config" in log and "missing keys: model.head.weight" in log
    assert "unexpected keys: model.head.weight" in log
    assert "\x1b" not in log  # default_setup's highlighted config put thousands there
    assert BLUE in terminal.stream.getvalue()


def test_plain_log_files_wraps_non_terminal_handlers_once():
    logger = logging.getLogger("rein_d2_test_plain")
    to_file, to_terminal = logging.StreamHandler(io.StringIO()), logging.StreamHandler(_Terminal())
    to_file.setFormatter(logging.Formatter("[x] %(message)s"))
    logger.handlers = [to_file, to_terminal]
    try:
        assert plain_log_files([logger.name]) == 1 and plain_log_files([logger.name]) == 0
        assert isinstance(to_file.formatter, PlainFormatter) and to_terminal.formatter is None
        logger.warning("a %s", BLUE)
        assert to_file.stream.getvalue() == "[x] a model.head.weight\n"
        assert BLUE in to_terminal.stream.getvalue()
    finally:
        logger.handlers = []
    assert strip_ansi("\x1b[1;31;5mERROR\x1b[0m \x1b[38;5;197mkey\x1b[39m") == "ERROR key"
