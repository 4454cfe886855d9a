"""Every command in the user docs runs as written: the script exists, its command line parses
with the script's own argument parser (no unknown flag, no missing argument), the config file
exists and every KEY VALUE override names a real key of the right type; `make` targets exist.

The commands are taken from the fenced code blocks of README.md, docs/*.md, datasets/README.md
and projects/**/*.md. Placeholders (`<...>`, `...`, shell variables) are
parsed as values; a config given as a placeholder is not loaded. Commands
that need no external data run in full elsewhere: the quick start's train_net / demo /
evaluate_dg / predict / export commands in test_quickstart_fingerprint, test_demo,
test_dg_evaluation, test_submission and test_export, on shrunk sizes; docs/CUSTOM_DATA.md's
commands, on the files it has a user write, in test_custom_data."""
import argparse
import glob
import os
import re
import runpy
import shlex
import sys

import pytest

from conftest import REPO

DOCS = ["README.md", "datasets/README.md", *sorted(
    os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "docs", "*.md"))
    + glob.glob(os.path.join(REPO, "projects", "**", "*.md"), recursive=True))]
PLACEHOLDER = "placeholder"  # what a `<...>` or `...` of the docs stands for
FENCE = re.compile(r"^```[a-z]*\n(.*?)^```", re.M | re.S)


def doc_commands():
    """(doc, command) for each shell command of each fenced block."""
    out = []
    for doc in DOCS:
        with open(os.path.join(REPO, doc)) as f:
            text = f.read()
        for block in FENCE.findall(text):
            joined = re.sub(r"\\\n\s*", " ", block)
            for line in joined.splitlines():
                line = re.sub(r"<[^<>]*>", PLACEHOLDER, line.strip())
                if line.startswith(("export ", "#")) or not line:
                    continue
                # a trailing comment (not inside quotes: the shell's own rule, via shlex)
                lex = shlex.shlex(line, posix=True, punctuation_chars="&")
                lex.whitespace_split, lex.commenters = True, "#"
                words = list(lex)
                cmd = []
                for w in words + ["&&"]:
                    if w == "&&":
                        if cmd and (cmd[0] in ("python", "make") or cmd[0].startswith("python")):
                            out.append((doc, cmd))
                        cmd = []
                    else:
                        cmd.append(w)
    return out


COMMANDS = doc_commands()


def _placeholder(word: str) -> bool:
    return PLACEHOLDER in word or "$" in word or word == "..." or word.endswith("...")


class _Parsed(Exception):
    def __init__(self, parser, argv):
        self.parser, self.argv = parser, argv


def _capture_parser(script: str, argv):
    """Run ``script`` as __main__ until it parses its command line; return that parser."""
    original = argparse.ArgumentParser.parse_args

    def capture(self, args=None, namespace=None):
        raise _Parsed(self, args)

    saved_argv, saved_path = sys.argv, list(sys.path)
    argparse.ArgumentParser.parse_args = capture
    sys.argv = [script, *argv]
    sys.path.insert(0, os.path.dirname(script))
    try:
        runpy.run_path(script, run_name="__main__")
    except _Parsed as p:
        return p.parser
    finally:
        argparse.ArgumentParser.parse_args = original
        sys.argv, sys.path[:] = saved_argv, saved_path
    raise AssertionError(f"{script} never parsed its command line")


def test_the_docs_hold_commands():
    tools = {c[1] for _, c in COMMANDS if c[0] == "python"}
    assert {"tools/train_net.py", "tools/evaluate_dg.py", "tools/convert_pretrained.py"} <= tools


@pytest.mark.parametrize("doc,cmd", COMMANDS, ids=[f"{d}:{' '.join(c)[:70]}" for d, c in COMMANDS])
def test_doc_command_runs_as_written(doc, cmd, monkeypatch):
    monkeypatch.chdir(REPO)
    if cmd[0] == "make":
        with open(os.path.join(REPO, "Makefile")) as f:
            targets = set(re.findall(r"^([a-z][\w-]*):", f.read(), re.M))
        assert set(cmd[1:]) <= targets, f"{doc}: `{' '.join(cmd)}` names a target the Makefile lacks"
        return
    if cmd[1] == "-m":
        assert cmd[2] == "pytest", f"{doc}: unexpected module in `{' '.join(cmd)}`"
        for path in cmd[3:]:
            assert path.startswith("-") or os.path.exists(path), f"{doc}: no {path}"
        return
    script = cmd[1]
    argv = [PLACEHOLDER if _placeholder(w) else w for w in cmd[2:]]
    assert os.path.isfile(script), f"{doc}: `{' '.join(cmd)}`: no script {script}"
    parser = _capture_parser(script, argv)
    try:
        args, unknown = parser.parse_known_args(argv)
    except SystemExit:
        pytest.fail(f"{doc}: `{' '.join(cmd)}` is refused by {script}'s argument parser")
    assert not unknown, f"{doc}: `{' '.join(cmd)}`: {script} does not know {unknown}"
    config = getattr(args, "config_file", None)
    # a config of the repository (a user's own, as docs/CUSTOM_DATA.md writes, runs in its test)
    if config and PLACEHOLDER not in config and config.startswith(("configs/", "projects/")):
        from rein_d2 import load_config

        assert os.path.isfile(config), f"{doc}: no config {config}"
        opts = [o for o in (getattr(args, "opts", None) or []) if o != "--"]
        pairs = [(k, v) for k, v in zip(opts[::2], opts[1::2]) if not (_placeholder(k) or _placeholder(v))]
        load_config(config, [x for kv in pairs for x in kv])  # a wrong key or type raises
