"""Files a user hands to rein_d2 run no code and cannot crash it: TorchScript archives (OpenAI
CLIP) are read without torch.jit.load, model-zoo pickles without numpy's reconstructors, configs
as plain YAML. Each payload below is written by the test and is live: it runs code (or crashes
the interpreter) when loaded the ordinary way."""
import os
import pickle
import re
import subprocess
import sys
import textwrap
import zipfile
from typing import Tuple

import numpy as np
import pytest
import torch
import torch.nn as nn

from rein_d2 import load_config
from rein_d2.checkpoint import CheckpointFileError, load_official_checkpoint, read_checkpoint
from rein_d2.checkpoint.torchscript import read_torchscript_tensors
from rein_d2.utils.cli import UserError
from rein_d2.tools import convert_pretrained
from conftest import REPO, config_path, error_lines
from test_meta_arch import MINI

pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.*:FutureWarning")


# ---------------------------------------------------------------- TorchScript (OpenAI CLIP)

def clip_like_module() -> nn.Module:
    """A CLIP-like module tree: visual.* in float16 and float32 (one a transposed view), integer
    and bool buffers, a 0-d buffer (as CLIP's input_resolution) and a bfloat16 text weight."""
    g = torch.Generator().manual_seed(3)
    root, visual, conv1, text = nn.Module(), nn.Module(), nn.Module(), nn.Module()
    root.add_module("visual", visual)
    visual.add_module("conv1", conv1)
    root.add_module("token_embedding", text)
    frozen = lambda t: nn.Parameter(t, requires_grad=False)  # noqa: E731
    conv1.register_parameter("weight", frozen(torch.randn(8, 3, 14, 14, generator=g).half()))
    visual.register_parameter("class_embedding", frozen(torch.randn(8, generator=g)))
    visual.register_parameter("proj", frozen(torch.randn(4, 8, generator=g).t()))  # strides (1, 8)
    visual.register_parameter("positional_embedding", frozen(torch.randn(17, 8, generator=g)))
    visual.register_buffer("input_resolution", torch.tensor(224))
    root.register_buffer("context_length", torch.tensor([77], dtype=torch.int32))
    root.register_buffer("mask", torch.tensor([True, False, True]))
    text.register_parameter("weight", frozen(torch.randn(5, 8, generator=g).bfloat16()))
    return root


def test_torchscript_tensors_are_read_exactly_without_loading_the_archive(tmp_path):
    path = tmp_path / "ViT-L-14.pt"
    torch.jit.save(torch.jit.script(clip_like_module()), str(path))
    expected = torch.jit.load(str(path)).state_dict()  # the test's own, trusted archive
    read = read_torchscript_tensors(path.read_bytes())
    assert list(read) == list(expected)
    for k, v in expected.items():
        assert read[k].dtype == v.dtype and read[k].shape == v.shape, k
        assert read[k].stride() == v.stride() and torch.equal(read[k], v), k
    # What the converters get: the same tensors in float32.
    official = load_official_checkpoint(str(path))
    assert list(official) == list(expected)
    assert all(official[k].dtype == torch.float32 and torch.equal(official[k], v.float())
               for k, v in expected.items())


class WritesOnLoad(nn.Module):
    """A module whose __setstate__, TorchScript saved in the archive, writes a file."""

    def __init__(self, marker: str):
        super().__init__()
        self.marker = marker
        self.register_buffer("w", torch.ones(2))

    def forward(self, x):
        return x

    @torch.jit.export
    def __getstate__(self) -> Tuple[torch.Tensor, str, bool]:
        return (self.w, self.marker, self.training)

    @torch.jit.export
    def __setstate__(self, state: Tuple[torch.Tensor, str, bool]) -> None:
        written = torch.from_file(state[1], True, 4, dtype=torch.uint8)
        written.fill_(65)
        self.w = state[0] + written[:2].float() * 0  # used, so that it is kept
        self.marker = state[1]
        self.training = state[2]


def test_a_torchscript_archive_whose_setstate_writes_a_file_runs_nothing(tmp_path, capsys):
    marker = tmp_path / "code_ran"
    root = clip_like_module()
    root.add_module("hook", WritesOnLoad(str(marker)))
    payload = tmp_path / "ViT-L-14.pt"
    torch.jit.save(torch.jit.script(root), str(payload))
    torch.jit.load(str(payload))  # the ordinary way: the payload is live
    assert marker.exists()
    marker.unlink()

    with pytest.raises(CheckpointFileError) as e:  # convert_pretrained and convert_rein_checkpoint
        load_official_checkpoint(str(payload))
    assert str(e.value).startswith(
        f"{payload}: refused, a TorchScript archive holding an object of class "
        f"__torch__.test_untrusted_files.WritesOnLoad saved by its own __getstate__ code")
    output = tmp_path / "out.pth"
    rc = convert_pretrained.main(["--config-file", config_path("rein_dinov2.yaml"), "--input",
                                          str(payload), "--output", str(output), *map(str, MINI)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith(f"error: {payload}: refused") and err.count("\n") == 1, err
    assert not marker.exists() and not output.exists()

    # An archive whose data.pkl calls a function itself, as an ordinary malicious pickle does.
    class RunsCode:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))
    crafted = tmp_path / "crafted.pt"
    with zipfile.ZipFile(crafted, "w") as z:
        z.writestr("crafted/data.pkl", pickle.dumps({"visual.proj": RunsCode()}, protocol=2))
        z.writestr("crafted/code/__torch__/m.py", "")
    with pytest.raises(CheckpointFileError, match=re.escape(
            f"{crafted}: refused, a pickle that would run code (it loads the global posix.system)")):
        load_official_checkpoint(str(crafted))
    assert not marker.exists()


def test_no_load_path_calls_torch_jit_load():
    for folder in ("rein_d2", "tools", "projects"):
        for base, _, files in os.walk(os.path.join(REPO, folder)):
            for name in files:
                if name.endswith(".py") and "tests" not in base.split(os.sep):
                    with open(os.path.join(base, name)) as f:
                        assert not re.search(r"jit\.load\s*\(", f.read()), os.path.join(base, name)


# ---------------------------------------------------------------- numpy pickles (.pkl)

def _dtype(name: bytes, flags: int, order: bytes = b"|") -> bytes:
    """Opcodes of numpy.dtype(name) whose saved description has ``flags``."""
    return (b"cnumpy\ndtype\nX" + len(name).to_bytes(4, "little") + name + b"\x89\x88\x87R"
            b"(K\x03X\x01\x00\x00\x00" + order + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xff"
            + b"K" + bytes([flags]) + b"tb")


def _latin1(data: bytes) -> bytes:
    """Opcodes of _codecs.encode(<data as latin-1 text>, "latin1"): file bytes as a bytes object."""
    return (b"c_codecs\nencode\nX" + len(data.decode("latin1").encode()).to_bytes(4, "little")
            + data.decode("latin1").encode() + b"X\x06\x00\x00\x00latin1\x86R")


def _model(value: bytes) -> bytes:
    return b"\x80\x02}X\x05\x00\x00\x00model}X\x01\x00\x00\x00w" + value + b"ss."


# Hand-made pickles that only use globals model-zoo files use. The first is the issue's: an
# object dtype with its flags cleared, so numpy's scalar() copies 8 file bytes into an object
# pointer (a segfault once touched); the second does the same through an array.
NUMPY_PAYLOADS = {
    "scalar_object_pointer.pkl": (
        _model(b"cnumpy.core.multiarray\nscalar\n" + _dtype(b"O8", 0) + _latin1(b"A" * 8) + b"\x86R"),
        "numpy dtype 'O8' ('O' kind), not plain numeric"),
    "array_object_pointer.pkl": (
        _model(b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85C\x01b\x87R"
               b"(K\x01K\x01\x85" + _dtype(b"O8", 0) + b"\x89" + _latin1(b"A" * 8) + b"tb"),
        "numpy dtype 'O8' ('O' kind), not plain numeric"),
    "float_with_object_flags.pkl": (
        _model(b"cnumpy.core.multiarray\nscalar\n" + _dtype(b"f8", 63, b"<") + _latin1(b"A" * 8) + b"\x86R"),
        "numpy dtype 'f8' with crafted flags 63 (numpy writes 0)"),
    "array_bigger_than_its_data.pkl": (
        _model(b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85C\x01b\x87R"
               b"(K\x01J\x00\x00\x00\x10\x85" + _dtype(b"f8", 0, b"<") + b"\x89" + _latin1(b"A" * 8) + b"tb"),
        "numpy array of shape (268435456,) and dtype float64 with 8 bytes of data"),
    "ndarray_from_a_buffer.pkl": (
        _model(b"cnumpy\nndarray\n(K\x01\x85X\x01\x00\x00\x00O" + _latin1(b"A" * 8) + b"tR"),
        "refused, numpy.ndarray called on file data"),
}


def test_crafted_numpy_pickles_are_refused_in_one_line_without_crashing(tmp_path):
    for name, (data, _) in NUMPY_PAYLOADS.items():
        (tmp_path / name).write_bytes(data)
    paths = [str(tmp_path / name) for name in NUMPY_PAYLOADS]
    # A child process, so that a segfault fails this test instead of ending pytest: it reads
    # each payload as every tool does, then runs train_net.py on the payload.
    child = textwrap.dedent("""
        import runpy, sys
        from rein_d2.checkpoint import CheckpointFileError, read_checkpoint
        n = int(sys.argv[1])
        paths, tool_argv = sys.argv[2:2 + n], sys.argv[2 + n:]
        for path in paths:
            try:
                print("loaded", path, read_checkpoint(path), flush=True)
            except CheckpointFileError as e:
                print("refused", e, flush=True)
        sys.argv = tool_argv
        runpy.run_path(tool_argv[0], run_name="__main__")
    """)
    train_net = [os.path.join(REPO, "tools", "train_net.py"), "--config-file", config_path("rein_dinov2.yaml"),
                 "--eval-only", *map(str, MINI), "MODEL.WEIGHTS", paths[0], "DATASETS.TEST", "()",
                 "OUTPUT_DIR", str(tmp_path / "out")]
    proc = subprocess.run([sys.executable, "-c", child, str(len(paths)), *paths, *train_net], capture_output=True,
                          text=True, cwd=REPO, timeout=240,
                          env=dict(os.environ, PYTHONPATH=REPO, PYTHONWARNINGS="ignore"))
    lines = [line for line in proc.stdout.splitlines() if line.startswith(("loaded", "refused"))]
    assert len(lines) == len(paths), (proc.returncode, proc.stdout[-3000:], proc.stderr[-3000:])
    for line, path, (_, what) in zip(lines, paths, NUMPY_PAYLOADS.values()):
        assert line.startswith(f"refused {path}: ") and what in line, line
        assert "rein_d2 reads .pkl files of numpy arrays of plain numbers" in line, line
    # train_net.py: exit status 2 and one line, no traceback.
    errors = error_lines(proc.stderr)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, (proc.returncode, proc.stderr[-3000:])
    assert errors == [f"error: {paths[0]}: refused, numpy dtype 'O8' ('O' kind), not plain numeric; "
                      "rein_d2 reads .pkl files of numpy arrays of plain numbers (bool, int, uint, "
                      "float, complex): save the weights with torch.save or pickle.dump of such arrays"]


@pytest.mark.parametrize("protocol", [0, 2, 3, 4, 5])
def test_model_zoo_pickles_still_load_exactly(tmp_path, protocol):
    rng = np.random.default_rng(0)
    model = {"backbone.res2.0.conv1.weight": rng.standard_normal((8, 4, 3, 3)).astype(np.float32),
             "backbone.res2.0.conv1.norm.running_var": np.asfortranarray(rng.random((3, 2))),
             "sem_seg_head.predictor.bias": rng.standard_normal(5).astype(">f4"),
             "backbone.stem.num_batches_tracked": np.int64(7),
             "proposal_generator.anchor_ids": np.arange(6, dtype=np.int32).reshape(2, 3),
             "roi_heads.mask": np.array([True, False]), "empty": np.zeros((0, 4), np.uint8),
             "half": np.arange(3, dtype=np.float16), "complex": np.ones(2, np.complex64)}
    path = tmp_path / "model_final_a3ec72.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": model, "__author__": "Detectron2 Model Zoo",
                     "matching_heuristics": True}, f, protocol=protocol)
    loaded = read_checkpoint(str(path))
    assert loaded["__author__"] == "Detectron2 Model Zoo" and loaded["matching_heuristics"] is True
    assert list(loaded["model"]) == list(model)
    for k, v in model.items():
        got = loaded["model"][k]
        assert type(got) is type(v) and got.dtype == v.dtype and got.shape == v.shape, k
        assert np.array_equal(got, v), k
        if isinstance(got, np.ndarray):
            assert got.flags.writeable, k  # torch.from_numpy needs no copy and warns of nothing


# ---------------------------------------------------------------- configs

def _write(path, text):
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_a_python_tag_in_a_config_or_any_base_runs_nothing(tmp_path, capsys):
    from detectron2.config import get_cfg
    marker = tmp_path / "code_ran"
    evil = _write(tmp_path / "evil.yaml", f"""\
        _BASE_: {config_path("rein_dinov2.yaml")}
        OUTPUT_DIR: !!python/object/apply:os.system ["touch {marker}"]
    """)
    get_cfg().load_yaml_with_base(evil, allow_unsafe=True)  # detectron2's default: the tag runs
    assert marker.exists()
    marker.unlink()
    capsys.readouterr()  # fvcore's warning of that load (and any trouble logging it) is not ours

    child = _write(tmp_path / "child.yaml", "_BASE_: evil.yaml\n")
    grandchild = _write(tmp_path / "grandchild.yaml", "_BASE_: [child.yaml]\nSEED: 3\n")
    refusal = (f"{evil}: refused, line 2 has the YAML tag !!python/object/apply:os.system, which "
               "would run code; rein_d2 reads configs as plain YAML (numbers, strings, lists, "
               "mappings): remove the tag")
    for config in (evil, child, grandchild):
        with pytest.raises(UserError) as e:
            load_config(config, MINI)
        assert str(e.value) == refusal
        rc = convert_pretrained.main(["--config-file", config, "--input", config,
                                              "--output", str(tmp_path / "o.pth")])
        assert rc == 2 and capsys.readouterr().err == f"error: {refusal}\n"
    # Later merges into a loaded config are as safe.
    cfg = load_config(config_path("rein_dinov2.yaml"), MINI)
    with pytest.raises(UserError, match="refused, line 2 has the YAML tag"):
        cfg.merge_from_file(evil)
    assert not marker.exists()


def test_a_url_or_missing_base_is_refused_naming_both_files(tmp_path):
    url = _write(tmp_path / "url.yaml", f"""\
        _BASE_: ["{config_path("rein_dinov2.yaml")}", "http://127.0.0.1:9/Base-Rein.yaml"]
    """)
    with pytest.raises(UserError) as e:
        load_config(url)
    assert str(e.value) == (f"{url}: _BASE_ http://127.0.0.1:9/Base-Rein.yaml: a URL; rein_d2 "
                            "downloads no config: download it and name the local file")
    missing = _write(tmp_path / "missing.yaml", "_BASE_: ../Base-Rein.yaml\n")
    with pytest.raises(UserError, match=re.escape(f"{missing}: _BASE_ {tmp_path}/../Base-Rein.yaml: "
                                                  "no such file")):
        load_config(missing)
    broken = _write(tmp_path / "broken.yaml", "SEED: [1\n")
    with pytest.raises(UserError, match=re.escape(f"{broken}: not valid YAML (line 2: ")):
        load_config(broken)


def test_configs_are_loaded_only_through_load_config():
    """Every tool and project reads its config files through rein_d2.load_config (safe YAML)."""
    pattern = re.compile(r"merge_from_file|load_yaml_with_base|yaml\.(unsafe_)?load\(")
    for folder in ("rein_d2", "tools", "projects"):
        for base, _, files in os.walk(os.path.join(REPO, folder)):
            for name in files:
                path = os.path.join(base, name)
                if name.endswith(".py") and "tests" not in base.split(os.sep) \
                        and path != os.path.join(REPO, "rein_d2", "config.py"):
                    with open(path) as f:
                        assert not pattern.search(f.read()), path
