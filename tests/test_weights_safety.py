"""No weights file runs code, in any tool; unreadable files and wrong weights are one clear line
and a non-zero exit, never a run on random weights."""
import os
import pickle
import sys

import numpy as np
import pytest
import torch
from detectron2.engine import default_argument_parser

from rein_d2 import load_config
from rein_d2.checkpoint import CheckpointFileError, CheckpointMismatchError, read_checkpoint
from rein_d2.engine import LightCheckpointer, frozen_keys, load_model_weights
from rein_d2.tools import convert_pretrained, demo, evaluate_dg, export_checkpoint
from rein_d2.tools import train_net as train_net_tool
from conftest import config_path
from test_meta_arch import MINI, mini_model
from test_training import dataset  # noqa: F401  (fixture)

STRICT = ["MODEL.ALLOW_RANDOM_WEIGHTS", False]


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def crafted(tmp_path, ext):
    """A weights file that would create ``marker`` if it were unpickled."""
    marker = tmp_path / "code_ran"
    path = tmp_path / f"crafted{ext}"
    payload = {"model": {"backbone.rein.scale": _RunsCode(marker)}, "__author__": "x"}
    if ext == ".pkl":
        with open(path, "wb") as f:
            pickle.dump(payload, f)
    else:
        torch.save(payload, path)
    return path, marker


@pytest.fixture
def weights(tmp_path):
    """A VFM file (as convert_pretrained.py writes it) and a light trained checkpoint."""
    model = mini_model()
    state = model.state_dict()
    torch.save({"model": {k: state[k] for k in frozen_keys(model)}}, tmp_path / "vfm.pth")
    LightCheckpointer(model, str(tmp_path)).save("trained")
    return model, tmp_path / "vfm.pth", tmp_path / "trained.pth"


@pytest.fixture(autouse=True)
def _reset_loggers():
    """train_net's setup_logger (cached) would keep writing to an earlier test's closed stderr."""
    import logging
    from detectron2.utils.logger import setup_logger
    setup_logger.cache_clear()
    for logger in [logging.root] + [v for v in logging.root.manager.loggerDict.values()
                                    if isinstance(v, logging.Logger)]:
        logger.handlers = [h for h in logger.handlers if not isinstance(h, logging.StreamHandler)
                           or isinstance(h, logging.FileHandler) or h.stream in (sys.stderr, sys.stdout)]


def an_image_folder(tmp_path):
    """A folder with one small picture: the demo checks its inputs before it loads weights."""
    from PIL import Image
    folder = tmp_path / "images"
    folder.mkdir(exist_ok=True)
    Image.fromarray(np.full((32, 48, 3), 90, np.uint8)).save(folder / "frame.png")
    return str(folder)


def train_net(argv):
    args = default_argument_parser().parse_args(argv)
    with pytest.raises(SystemExit) as e:
        train_net_tool.main(args)
    return e.value.code


@pytest.mark.parametrize("ext", [".pkl", ".pth"])
def test_no_tool_runs_code_from_a_weights_file(ext, tmp_path, capsys, weights, dataset):  # noqa: F811
    _, vfm, trained = weights
    bad, marker = crafted(tmp_path, ext)
    cfg = ["--config-file", config_path("rein_dinov2.yaml")]
    base = [*map(str, MINI), *STRICT, "DATASETS.TRAIN", f"('{dataset}',)", "DATASETS.TEST", "()",
            "DATALOADER.NUM_WORKERS", "0", "INPUT.CROP.SIZE", "[64, 64]", "SOLVER.IMS_PER_BATCH", "2"]
    out = tmp_path / "run"
    out.mkdir()
    (out / bad.name).write_bytes(bad.read_bytes())
    (out / "last_checkpoint").write_text(bad.name)  # --resume finds the crafted file
    runs = {
        "train_net MODEL.WEIGHTS": lambda: train_net(
            cfg + base + ["MODEL.WEIGHTS", str(bad), "OUTPUT_DIR", str(tmp_path / "a")]),
        "train_net --eval-only": lambda: train_net(
            cfg + ["--eval-only"] + base + ["MODEL.WEIGHTS", str(vfm), "MODEL.TRAINED_WEIGHTS", str(bad),
                                            "OUTPUT_DIR", str(tmp_path / "b")]),
        "train_net --resume": lambda: train_net(
            cfg + ["--resume"] + base + ["MODEL.WEIGHTS", str(vfm), "OUTPUT_DIR", str(out)]),
        "evaluate_dg": lambda: evaluate_dg.main(
            cfg + base + ["MODEL.WEIGHTS", str(bad)]),
        "demo": lambda: demo.main(
            cfg + ["--input", an_image_folder(tmp_path), "--output", str(tmp_path / "d")] + base
            + ["MODEL.WEIGHTS", str(vfm), "MODEL.TRAINED_WEIGHTS", str(bad)]),
        "export_checkpoint": lambda: export_checkpoint.main(
            cfg + ["--output", str(tmp_path / "e.pth")] + base + ["MODEL.WEIGHTS", str(bad)]),
    }
    for name, run in runs.items():
        assert run() != 0, name
        err = capsys.readouterr().err
        assert f"{bad.name}: refused, a pickle that would run code (it loads the global posix.system)" in err, (name, err)
        assert "Traceback" not in err, name
        assert not marker.exists(), f"{name} ran code from {bad}"


def test_model_zoo_pickle_of_numpy_arrays_loads(tmp_path):
    model = mini_model()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    zoo = tmp_path / "zoo.pkl"
    with open(zoo, "wb") as f:
        pickle.dump({"model": {k: v.numpy() for k, v in model.state_dict().items()},
                     "__author__": "model zoo"}, f)
    fresh = mini_model()
    cfg = load_config(config_path("rein_dinov2.yaml"), MINI + STRICT + ["MODEL.WEIGHTS", str(zoo)])
    load_model_weights(cfg, fresh)
    for k, v in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k


def test_unreadable_files_are_one_line_naming_what_they_are(tmp_path):
    good = tmp_path / "good.pth"
    torch.save({"model": {"w": torch.zeros(1000)}}, good)
    data = good.read_bytes()
    cases = {
        "truncated.pth": (data[: len(data) // 2], "truncated or corrupt archive"),
        "photo.pth": (b"\xff\xd8\xff\xe0\x00\x10JFIF" + bytes(100), "a JPEG image, not a checkpoint"),
        "empty.pth": (b"", "empty file"),
        "page.pth": (b"<html>404</html>", "an HTML or XML page"),
        "half.pkl": (pickle.dumps({"a": np.ones(100)})[:50], "truncated or corrupt pickle"),
    }
    for name, (content, what) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(CheckpointFileError) as e:
            read_checkpoint(str(path))
        message = str(e.value)
        assert message.startswith(f"{path}: {what}") and "\n" not in message, message
        assert "again" in message or "give" in message  # what to do
    with pytest.raises(CheckpointFileError, match="downloads nothing"):
        read_checkpoint("https://example.org/w.pth")


def test_demo_names_a_truncated_weights_file_in_one_line(tmp_path, capsys, weights):
    _, vfm, _ = weights
    data = vfm.read_bytes()
    vfm.write_bytes(data[: len(data) // 3])
    code = demo.main(["--config-file", config_path("rein_dinov2.yaml"), "--input", an_image_folder(tmp_path),
                              "--output", str(tmp_path / "out"), *map(str, MINI), "MODEL.WEIGHTS", str(vfm)])
    err = capsys.readouterr().err.strip()
    assert code != 0 and err.count("\n") == 0, err
    assert err.startswith(f"error: {vfm}: truncated or corrupt archive") and "PytorchStreamReader" in err


def strict_cfg(*opts):
    return load_config(config_path("rein_dinov2.yaml"), MINI + STRICT + list(opts))


def test_an_unconverted_official_dinov2_file_is_refused_with_the_converter_command(tmp_path):
    model = mini_model()
    official = {k[len("backbone.vit."):]: v for k, v in model.state_dict().items() if k.startswith("backbone.vit.")}
    official["mask_token"] = torch.zeros(1, 64)
    official["blocks.0.ls1.gamma"] = torch.ones(64)
    path = tmp_path / "dinov2_vits14_pretrain.pth"
    torch.save(official, path)
    with pytest.raises(CheckpointMismatchError) as e:
        load_model_weights(strict_cfg("MODEL.WEIGHTS", str(path)), mini_model(), inference=False)
    assert f"{path}: an official DINOv2 checkpoint that was not converted" in str(e.value)
    assert f"tools/convert_pretrained.py --config-file <your config> --input {path}" in str(e.value)


def test_weights_of_another_vfm_size_are_refused_naming_both_sizes(tmp_path):
    small = mini_model()
    torch.save({"model": small.state_dict()}, tmp_path / "small_full.pth")
    wider = strict_cfg("MODEL.VIT.EMBED_DIM", 96, "MODEL.VIT.DEPTH", 6, "MODEL.WEIGHTS", str(tmp_path / "small_full.pth"))
    from detectron2.modeling import build_model
    with pytest.raises(CheckpointMismatchError) as e:
        load_model_weights(wider, build_model(wider), inference=False)
    message = str(e.value)
    assert "weights for another VFM size (width 64, 4 blocks in the file, width 96, 6 blocks in the model" in message
    assert "MODEL.VIT.SIZE" in message
    # export_checkpoint says the same, not "set MODEL.TRAINED_WEIGHTS".
    code = export_checkpoint.main(["--config-file", config_path("rein_dinov2.yaml"),
                                   "--output", str(tmp_path / "x.pth"), *map(str, MINI),
                                   "MODEL.VIT.EMBED_DIM", "96", "MODEL.VIT.DEPTH", "6",
                                   "MODEL.WEIGHTS", str(tmp_path / "small_full.pth")])
    assert code == 2 and not (tmp_path / "x.pth").exists()


def test_random_vfm_or_trained_part_is_refused(weights, tmp_path):
    _, vfm, trained = weights
    with pytest.raises(CheckpointMismatchError, match="MODEL.WEIGHTS is empty, so the frozen VFM would keep random"):
        load_model_weights(strict_cfg("MODEL.TRAINED_WEIGHTS", str(trained)), mini_model())
    with pytest.raises(CheckpointMismatchError, match="MODEL.WEIGHTS is empty"):
        load_model_weights(strict_cfg(), mini_model(), inference=False)  # training too
    with pytest.raises(CheckpointMismatchError, match=r"trained part would keep its initial values.*backbone\.rein\."):
        load_model_weights(strict_cfg("MODEL.WEIGHTS", str(vfm)), mini_model())
    # A file holding only part of the VFM.
    part = tmp_path / "part.pth"
    full = torch.load(vfm, weights_only=True)["model"]
    torch.save({"model": dict(list(full.items())[:5])}, part)
    with pytest.raises(CheckpointMismatchError, match=f"{part} lacks .* of the VFM's weights"):
        load_model_weights(strict_cfg("MODEL.WEIGHTS", str(part)), mini_model(), inference=False)
    # What is right loads: VFM for training, VFM + trained part for inference.
    load_model_weights(strict_cfg("MODEL.WEIGHTS", str(vfm)), mini_model(), inference=False)
    load_model_weights(strict_cfg("MODEL.WEIGHTS", str(vfm), "MODEL.TRAINED_WEIGHTS", str(trained)), mini_model())


def test_eval_only_resume_scores_the_last_checkpoint(tmp_path, weights, monkeypatch):
    model, vfm, trained = weights
    out = tmp_path / "run"
    out.mkdir()
    os.replace(trained, out / "model_0000009.pth")
    (out / "last_checkpoint").write_text("model_0000009.pth")
    seen = {}
    monkeypatch.setattr(train_net_tool.ReinTrainer, "test", classmethod(
        lambda cls, cfg, m, evaluators=None, **kw: seen.setdefault("state", m.state_dict())))
    args = default_argument_parser().parse_args(
        ["--config-file", config_path("rein_dinov2.yaml"), "--eval-only", "--resume", *map(str, MINI), *STRICT,
         "MODEL.WEIGHTS", str(vfm), "OUTPUT_DIR", str(out)])
    train_net_tool.main(args)
    for k, v in model.state_dict().items():
        assert torch.equal(seen["state"][k], v), k
    # Without --resume and no trained weights: refused, not scored at random.
    args.resume = False
    with pytest.raises(SystemExit) as e:
        train_net_tool.main(args)
    assert e.value.code == 2


def test_converters_refuse_to_overwrite_their_input(tmp_path, capsys):
    path = tmp_path / "dinov2.pth"
    torch.save({"x": torch.zeros(1)}, path)
    before = path.read_bytes()
    code = convert_pretrained.main(["--config-file", config_path("rein_dinov2.yaml"),
                                            "--input", str(path), "--output", str(path), *map(str, MINI)])
    assert code == 2 and path.read_bytes() == before
    assert "writing it would replace the input" in capsys.readouterr().err
