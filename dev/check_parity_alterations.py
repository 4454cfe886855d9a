#!/usr/bin/env python
"""Check that the reference-parity tests fail when one conversion or module detail is altered.

The repository's rein_d2/, tools/, tests/, configs/ and pytest.ini are copied into a temporary
folder ``<tmp>/repo`` next to a link ``<tmp>/shared -> <repo>/../shared`` (the tests find the
reference fixtures in ../shared). The unaltered copy must pass; then, one at a time, each
alteration below (an exact-string replacement that must occur exactly once, else it is reported
"not applicable") is applied to the copy, the parity tests are run on it and the file is
restored. pytest runs in-process in a child ``python -c`` with the copy first on sys.path and
reports which rein_d2 it imported: a run that used any other rein_d2 aborts the check.

The working tree is never modified. Writes docs/parity_alterations.md and prints the same
table; exits 1 if an alteration was not caught (or could not be applied).

    python tools/check_parity_alterations.py            # everything (several minutes)
    python tools/check_parity_alterations.py --list
    python tools/check_parity_alterations.py --only rein_softmax_scale
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import List, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(REPO), "shared")
COPIED = ("rein_d2", "tools", "tests", "configs", "pytest.ini")
# The parity file, plus the unit tests that pin details the miniature fixture cannot reach.
DEFAULT_TESTS = ["tests/test_reference_parity.py", "tests/test_rein.py", "tests/test_head_parts.py"]
REPORT = os.path.join(REPO, "docs", "parity_alterations.md")
RUN_TIMEOUT_S = 600


@dataclass
class Alteration:
    name: str
    path: str  # relative to the repository root
    old: str
    new: str
    what: str  # what is changed
    why: str  # why it matters, one short phrase
    note: str = ""  # shown in the report's notes column (e.g. why the fixture cannot catch it)


A = Alteration
ALTERATIONS: List[Alteration] = [
    # -- official VFM conversion -----------------------------------------------------------
    A("pretrained_kernel_bilinear", "rein_d2/checkpoint/pretrained.py",
      'return F.interpolate(v, size=tuple(shape[-2:]), mode="bicubic", align_corners=False)',
      'return F.interpolate(v, size=tuple(shape[-2:]), mode="bilinear", align_corners=False)',
      "patch kernel 14->16 resized bilinearly instead of bicubically",
      "every patch embedding differs"),
    A("pretrained_pos_align_corners", "rein_d2/checkpoint/pretrained.py",
      'grid = F.interpolate(grid, size=(new, new), mode="bicubic", align_corners=False)',
      'grid = F.interpolate(grid, size=(new, new), mode="bicubic", align_corners=True)',
      "position table 5x5->4x4 resized with align_corners=True",
      "position embeddings shifted"),
    A("pretrained_pos_no_cls_prefix", "rein_d2/checkpoint/pretrained.py",
      "n_prefix = 0 if backbone.vit.no_embed_class else backbone.num_prefix_tokens",
      "n_prefix = 0",
      "cls entry of pos_embed not split off (whole table treated as the grid)",
      "cls position lost / grid misread"),
    # -- backbone ----------------------------------------------------------------------------
    A("vit_pos_grid_plain_size", "rein_d2/modeling/backbone/vit_rein.py",
      "scale_factor=((size[0] + 0.1) / h, (size[1] + 0.1) / w),",
      "size=tuple(size),",
      "run-time position-grid resize by target size instead of the (n + 0.1) scale factor",
      "features at other input sizes differ from DINOv2's"),
    A("vit_neck_nearest", "rein_d2/modeling/backbone/vit_rein.py",
      'F.interpolate(m, scale_factor=s, mode="bilinear", align_corners=False)',
      'F.interpolate(m, scale_factor=s, mode="nearest")',
      "multi-scale neck resized with nearest instead of bilinear",
      "res2/res3/res5 maps differ"),
    A("vit_out_indices_large", "rein_d2/modeling/backbone/vit_rein.py",
      "return [7, 11, 15, 23]",
      "return [5, 11, 17, 23]",
      "24-block default out_indices [7,11,15,23] -> the common [5,11,17,23]",
      "ViT-L features taken from the wrong blocks"),
    # -- Rein --------------------------------------------------------------------------------
    A("rein_softmax_scale", "rein_d2/modeling/rein.py",
      "attn = F.softmax(attn * self.embed_dim**-0.5, dim=-1)",
      "attn = F.softmax(attn, dim=-1)",
      "1/sqrt(C) factor removed from the token softmax",
      "attention over tokens too sharp"),
    A("rein_null_token_kept", "rein_d2/modeling/rein.py",
      "delta_bar = attn[..., 1:] @ self.mlp_token2feat(tokens[1:])",
      "delta_bar = attn @ self.mlp_token2feat(tokens)",
      "null token 0 not dropped after the softmax",
      "patches cannot attend to nothing"),
    A("rein_null_token_before_softmax", "rein_d2/modeling/rein.py",
      "attn = feats @ tokens.t()  # [B, N, m]\n"
      "        if self.use_softmax:\n"
      "            attn = F.softmax(attn * self.embed_dim**-0.5, dim=-1)\n"
      "        # Token 0 takes part in the softmax, but its column is dropped: a \"null\" token that lets\n"
      "        # a patch attend to nothing.\n"
      "        delta_bar = attn[..., 1:] @ self.mlp_token2feat(tokens[1:])",
      "attn = feats @ tokens[1:].t()  # [B, N, m - 1]\n"
      "        if self.use_softmax:\n"
      "            attn = F.softmax(attn * self.embed_dim**-0.5, dim=-1)\n"
      "        delta_bar = attn @ self.mlp_token2feat(tokens[1:])",
      "null token dropped before the softmax instead of after",
      "softmax normalised without the null token"),
    A("rein_no_residual_in_delta_f", "rein_d2/modeling/rein.py",
      "return self.mlp_delta_f(delta_bar + feats)",
      "return self.mlp_delta_f(delta_bar)",
      "'+ f' removed inside mlp_delta_f",
      "refinement ignores the features"),
    A("rein_linked_query_order", "rein_d2/modeling/rein.py",
      "torch.stack([x.amax(dim=0), x.mean(dim=0), x[-1]], dim=-1)",
      "torch.stack([x.mean(dim=0), x.amax(dim=0), x[-1]], dim=-1)",
      "linked-query statistics interleaved as mean/max/last instead of max/mean/last",
      "merge weights applied to the wrong statistic"),
    A("rein_scale_not_applied", "rein_d2/modeling/rein.py",
      "feats = feats + self.scale * self.delta_f(feats, self.tokens(layer))",
      "feats = feats + self.delta_f(feats, self.tokens(layer))",
      "learnable scale not applied to the refinement",
      "refinement 1/scale times too strong"),
    # -- release checkpoint conversion -------------------------------------------------------
    A("release_pixel_decoder_prefix", "rein_d2/checkpoint/release.py",
      '("decode_head.pixel_decoder.", "pixel_decoder."),',
      '("decode_head.pixel_decoder.", "predictor."),',
      "decode_head.pixel_decoder.* mapped to predictor.*",
      "pixel-decoder weights not loaded"),
    # -- head --------------------------------------------------------------------------------
    A("head_sine_not_normalised", "rein_d2/modeling/head/position_encoding.py",
      "        y = y / (y[:, -1:, :] + self.eps) * self.scale\n"
      "        xx = xx / (xx[:, :, -1:] + self.eps) * self.scale\n",
      "",
      "sine position encoding not normalised to [0, 2*pi] (mmdet's normalize=False)",
      "positions of every level differ"),
    A("head_level_encoding_not_added", "rein_d2/modeling/head/pixel_decoder.py",
      "level_pos = self.position_encoding(proj) + self.level_encoding.weight[i].view(1, -1, 1, 1)",
      "level_pos = self.position_encoding(proj)",
      "pixel-decoder level embedding not added to the positions",
      "encoder cannot tell levels apart"),
    A("head_deform_align_corners", "rein_d2/modeling/head/ms_deform_attn.py",
      "align_corners=False))  # [B*heads, d, Q, points]",
      "align_corners=True))  # [B*heads, d, Q, points]",
      "deformable attention grid_sample with align_corners=True",
      "samples shifted by half a pixel"),
    A("head_attn_mask_on_logits", "rein_d2/modeling/head/transformer_decoder.py",
      "attn = attn.flatten(2).sigmoid() < 0.5",
      "attn = attn.flatten(2) < 0.5",
      "attention-mask threshold 0.5 applied to logits (sigmoid dropped: p < 0.62)",
      "different pixels masked"),
    A("head_attn_mask_no_reset", "rein_d2/modeling/head/transformer_decoder.py",
      "attn = attn & ~attn.all(dim=-1, keepdim=True)",
      "attn = attn",
      "all-True attention-mask rows not reset to all-False",
      "fully masked queries lose cross-attention (reference: attend everywhere)"),
    A("head_self_before_cross", "rein_d2/modeling/head/transformer_decoder.py",
      "query = self.norms[0](self.cross_attn(query, memory, memory, query_pos, memory_pos, attn_mask))\n"
      "        query = self.norms[1](self.self_attn(query, query, query, query_pos, query_pos))",
      "query = self.norms[0](self.self_attn(query, query, query, query_pos, query_pos))\n"
      "        query = self.norms[1](self.cross_attn(query, memory, memory, query_pos, memory_pos, attn_mask))",
      "self-attention before masked cross-attention (DETR order)",
      "Mask2Former's layer order"),
    A("head_no_post_norm", "rein_d2/modeling/head/transformer_decoder.py",
      "out = self.transformer_decoder.post_norm(query)",
      "out = query",
      "decoder's final LayerNorm skipped before the prediction heads",
      "class/mask logits unnormalised"),
    A("head_semantic_align_corners", "rein_d2/modeling/head/inference.py",
      'masks = F.interpolate(mask_logits, size=size, mode="bilinear", align_corners=False)',
      'masks = F.interpolate(mask_logits, size=size, mode="bilinear", align_corners=True)',
      "semantic_logits upsamples masks with align_corners=True",
      "segmentation shifted"),
    A("head_no_object_weight", "rein_d2/config.py",
      "cfg.MODEL.MASK2FORMER.NO_OBJECT_WEIGHT = 0.1",
      "cfg.MODEL.MASK2FORMER.NO_OBJECT_WEIGHT = 1.0",
      "no-object class weight 0.1 -> 1.0",
      "classification loss dominated by no-object"),
    A("head_dice_no_smoothing", "rein_d2/modeling/head/criterion.py",
      "dice = 1 - (2 * (p * gt_points).sum(1) + 1) / (p.sum(1) + gt_points.sum(1) + 1)",
      "dice = 1 - (2 * (p * gt_points).sum(1)) / (p.sum(1) + gt_points.sum(1))",
      "Dice loss smoothing 1 -> 0",
      "loss_dice differs"),
    A("head_num_masks_no_clamp", "rein_d2/modeling/head/criterion.py",
      "return num.clamp(min=1)",
      "return num",
      "num_masks not clamped to >= 1",
      "division by a fraction/zero with few masks"),
    A("head_matcher_class_cost", "rein_d2/modeling/head/criterion.py",
      "cost = (-self.cost_class * cls_logits.float().softmax(-1)[:, labels]",
      "cost = (-cls_logits.float().softmax(-1)[:, labels]",
      "Hungarian class cost weight 2 -> 1",
      "different query-to-mask assignment"),
]

NOTES = {
    "vit_pos_grid_plain_size": "the fixture's 64x64 input meets a table converted to the same 4x4 "
    "grid, so the parity file never calls the run-time resize; "
    "tests/test_rein.py::test_run_time_position_resize_is_dinov2s pins DINOv2's formula",
    "vit_out_indices_large": "the parity config sets OUT_INDICES for its 4 blocks; "
    "tests/test_rein.py::test_out_indices_defaults checks the 24-block default",
    "head_num_masks_no_clamp": "matters only under DDP (mean mask count below 1); "
    "tests/test_head_parts.py::test_num_masks_is_averaged_over_processes_and_clamped fakes two processes",
}
for _a in ALTERATIONS:
    _a.note = _a.note or NOTES.get(_a.name, "")

# For the report: what assertion would catch an alteration the default tests let through.
ASSERTIONS = {}


# ---- running the tests on a copy --------------------------------------------------------------

# pytest runs in-process after the copy is put first on sys.path; afterwards the child reports
# where the rein_d2 it imported lives, so the check can refuse results from another rein_d2.
_CHILD = r"""
import os, sys
root = os.getcwd()
sys.path.insert(0, root)
import pytest
rc = pytest.main(sys.argv[1:])
mod = sys.modules.get("rein_d2")
print("\n@@REIN_D2_FILE@@ " + (os.path.realpath(mod.__file__) if mod else "NONE"))
sys.exit(int(rc))
"""


@dataclass
class Result:
    outcome: str  # "passed", "caught (assertion)", "caught (error)", "NOT caught", "not applicable"
    test: str = ""
    detail: str = ""
    seconds: float = 0.0
    output: str = ""

    @property
    def caught(self) -> bool:
        return self.outcome.startswith("caught")


def make_copy() -> (str, str):
    tmp = tempfile.mkdtemp(prefix="rein_parity_alterations_")
    repo = os.path.join(tmp, "repo")
    os.makedirs(repo)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
    for name in COPIED:
        src = os.path.join(REPO, name)
        if os.path.isdir(src):
            shutil.copytree(src, os.path.join(repo, name), ignore=ignore)
        elif os.path.isfile(src):
            shutil.copy2(src, os.path.join(repo, name))
    os.symlink(SHARED, os.path.join(tmp, "shared"))
    return tmp, repo


def child_env(repo: str) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = repo + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # restored files must never meet a stale .pyc
    env.setdefault("OMP_NUM_THREADS", "2")
    return env


def verify_import(repo: str):
    """The copy's rein_d2 (not the editable install of REPO) is what a child imports."""
    out = subprocess.run([sys.executable, "-c", _CHILD.split("import pytest")[0]
                          + "import rein_d2; print(os.path.realpath(rein_d2.__file__))"],
                         cwd=repo, env=child_env(repo), capture_output=True, text=True, check=True)
    where = out.stdout.strip().splitlines()[-1]
    if not where.startswith(os.path.realpath(repo) + os.sep):
        raise SystemExit(f"the copy's rein_d2 is not imported first (got {where})")
    return where


def run_tests(repo: str, tests: List[str]) -> Result:
    cmd = [sys.executable, "-c", _CHILD, "-q", "-x", "-p", "no:cacheprovider", "--tb=short",
           "-rfE", *tests]
    t0 = time.time()
    try:
        proc = subprocess.run(cmd, cwd=repo, env=child_env(repo), capture_output=True, text=True,
                              timeout=RUN_TIMEOUT_S)
        out, rc = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired:
        return Result("caught (error)", "", f"timed out after {RUN_TIMEOUT_S}s", time.time() - t0)
    dt = time.time() - t0
    m = re.search(r"^@@REIN_D2_FILE@@ (.*)$", out, re.M)
    used = m.group(1).strip() if m else "?"
    if used != "NONE" and not used.startswith(os.path.realpath(repo) + os.sep):
        raise SystemExit(f"pytest imported rein_d2 from {used}, not from the copy {repo}:\n{out}")
    if rc == 0:
        return Result("passed", seconds=dt, output=out)
    test, kind, detail = _first_failure(out)
    if not test and not detail:  # collection/usage/internal error: show the last line
        detail = out.strip().splitlines()[-1] if out.strip() else f"exit code {rc}"
    return Result(f"caught ({kind})", test, detail, dt, out)


def _first_failure(out: str):
    """(test id, "assertion"/"error", the failing source line and message).

    "assertion": a test's own assertion failed; "error": any other exception, or a failure
    while building the model (a fixture: e.g. a converter refusing the checkpoint)."""
    test, kind, msg = "", "error", ""
    m = re.search(r"^(FAILED|ERROR) (\S+)(?: - (.*))?$", out, re.M)
    if m:
        test = m.group(2).split("::", 1)[-1]
        msg = (m.group(3) or "").strip()
        if m.group(1) == "ERROR":
            test += " (setup)"
    # The source line pytest shows just above the first "E   " line (--tb=short), skipping
    # Python's ^^^^ / ~~~~ position markers.
    lines = out.splitlines()
    src = ""
    for i, line in enumerate(lines):
        if line.startswith("E   "):
            for j in range(i - 1, -1, -1):
                code = lines[j].strip()
                if lines[j].startswith("    ") and code and set(code) - set("^~ "):
                    src = code
                    break
            msg = line[4:].strip() or msg  # fuller than the summary line's
            # The measured value, when pytest spells the comparison out on the next line.
            nxt = lines[i + 1][4:].strip() if i + 1 < len(lines) and lines[i + 1].startswith("E   ") else ""
            if nxt.startswith("assert ") and nxt not in msg:
                msg += f" ({nxt})"
            break
    if m and m.group(1) == "FAILED" and msg.startswith(("AssertionError", "assert ")):
        kind = "assertion"
    detail = src + (f" -> {msg}" if msg else "")
    return test, kind, detail[:400]


def apply(repo: str, alt: Alteration) -> Optional[str]:
    """Apply ``alt`` to the copy; returns the original text, or None if not applicable."""
    path = os.path.join(repo, alt.path)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        text = f.read()
    if text.count(alt.old) != 1:
        return None
    with open(path, "w") as f:
        f.write(text.replace(alt.old, alt.new))
    return text


def restore(repo: str, alt: Alteration, text: str):
    path = os.path.join(repo, alt.path)
    with open(path, "w") as f:
        f.write(text)
    with open(path) as f:
        assert f.read() == text, f"could not restore {alt.path}"


# ---- report -------------------------------------------------------------------------------------

def _cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def table(rows) -> str:
    lines = ["| # | alteration | file | what was changed | why it matters | result | first failing test | notes |",
             "|---|---|---|---|---|---|---|---|"]
    for i, (alt, res) in enumerate(rows, 1):
        failing = res.test + (f": `{_cell(res.detail)}`" if res.detail else "")
        lines.append(f"| {i} | {alt.name} | {alt.path} | {_cell(alt.what)} | {_cell(alt.why)} | "
                     f"{'**NOT caught**' if res.outcome == 'NOT caught' else res.outcome} | "
                     f"{failing} | {_cell(alt.note)} |")
    return "\n".join(lines)


def write_report(rows, tests, baseline: Result, total_s: float, partial: bool):
    caught = sum(r.caught for _, r in rows)
    md = [
        "# Parity tests vs deliberate alterations",
        "",
        f"Generated by `tools/check_parity_alterations.py`{' (partial run: --only)' if partial else ''}. "
        "Each alteration is one exact-string replacement in a temporary copy of the repository "
        "(the working tree is untouched); the copy's tests then run with "
        f"`pytest -q -x -p no:cacheprovider {' '.join(tests)}` against the reference fixtures "
        "in ../shared/fixtures/reference, importing the copy's rein_d2 (checked on every run).",
        "",
        f"Unaltered copy: {baseline.outcome} ({baseline.seconds:.0f} s). "
        f"Caught: {caught} of {len(rows)}. Total runtime: {total_s:.0f} s.",
        "",
        "\"caught (assertion)\": a parity assertion failed (the measured max difference is "
        "shown against the tolerance 1e-4); \"caught (error)\": building the model failed (a "
        "converter refused the checkpoint, or an exception), which also blocks the alteration.",
        "",
        table(rows),
        "",
    ]
    missed = [(a, r) for a, r in rows if not r.caught]
    if missed:
        md += ["## Not caught: analysis", ""]
        for a, r in missed:
            md.append(f"- **{a.name}** ({r.outcome}): {a.note or 'no note'}. "
                      f"{ASSERTIONS.get(a.name, '')}".rstrip())
        md.append("")
    os.makedirs(os.path.dirname(REPORT), exist_ok=True)
    with open(REPORT, "w") as f:
        f.write("\n".join(md))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--list", action="store_true", help="list the alterations and exit")
    p.add_argument("--only", action="append", metavar="NAME", help="run only this alteration "
                   "(repeatable)")
    p.add_argument("--tests", nargs="+", default=DEFAULT_TESTS,
                   help=f"test files to run (default: {' '.join(DEFAULT_TESTS)})")
    p.add_argument("--keep", action="store_true", help="keep the temporary copy")
    p.add_argument("--show-output", action="store_true", help="print each pytest run's output")
    p.add_argument("--no-report", action="store_true", help=f"do not write {REPORT}")
    args = p.parse_args(argv)

    if args.list:
        for a in ALTERATIONS:
            print(f"{a.name:34s} {a.path:45s} {a.what}")
        return 0
    chosen = ALTERATIONS
    if args.only:
        unknown = set(args.only) - {a.name for a in ALTERATIONS}
        if unknown:
            p.error(f"unknown alteration(s): {', '.join(sorted(unknown))} (see --list)")
        chosen = [a for a in ALTERATIONS if a.name in args.only]
    if not os.path.isdir(os.path.join(SHARED, "fixtures", "reference")):
        raise SystemExit(f"reference fixtures not found under {SHARED}")

    t_start = time.time()
    tmp, repo = make_copy()
    try:
        print(f"copy: {repo} (rein_d2 imported from {verify_import(repo)})", flush=True)
        baseline = run_tests(repo, args.tests)
        print(f"unaltered copy: {baseline.outcome} in {baseline.seconds:.0f} s", flush=True)
        if baseline.outcome != "passed":
            print(f"the unaltered copy must pass; aborting ({baseline.test}: {baseline.detail})")
            return 2
        rows = []
        for alt in chosen:
            text = apply(repo, alt)
            if text is None:
                res = Result("not applicable", detail="original string not found exactly once")
            else:
                try:
                    res = run_tests(repo, args.tests)
                finally:
                    restore(repo, alt, text)
                if res.outcome == "passed":
                    res.outcome = "NOT caught"
            rows.append((alt, res))
            if args.show_output:
                print(res.output)
            print(f"  {alt.name:34s} {res.outcome:20s} {res.seconds:5.0f} s  {res.test}", flush=True)
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    total = time.time() - t_start
    print()
    print(table(rows))
    caught = sum(r.caught for _, r in rows)
    print(f"\ncaught {caught} of {len(rows)}; total runtime {total:.0f} s")
    if not args.no_report:
        write_report(rows, args.tests, baseline, total, partial=bool(args.only))
        print(f"report: {os.path.relpath(REPORT, os.getcwd())}")
    return 0 if caught == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
