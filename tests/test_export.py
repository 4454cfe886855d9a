"""Exported models (rein_d2.export, tools/export_model.py) give the PyTorch model's numbers:
torch.export and ONNX (run by onnxruntime) within 1e-4, whole-image and sliding windows,
logits and labels, through the deformable attention and the masked attention."""
import pytest
import torch

from conftest import config_path
from rein_d2.export import SemanticExport, export_onnx, export_program
from rein_d2.tools import export_model
from test_meta_arch import MINI, mini_model

SLIDE = ["MODEL.MASK2FORMER.TEST.MODE", "slide", "MODEL.MASK2FORMER.TEST.CROP_SIZE", (32, 32),
         "MODEL.MASK2FORMER.TEST.STRIDE", (24, 24)]


def reference_logits(model, normalised):
    """The model's own inference (detectron2 inputs: unnormalised image, its size)."""
    image = normalised[0] * model.pixel_std + model.pixel_mean
    with torch.no_grad():
        return model([{"image": image, "height": image.shape[-2], "width": image.shape[-1]}])[0]["sem_seg"]


@pytest.mark.parametrize("mode,opts,hw", [("whole", [], (48, 80)), ("slide", SLIDE, (56, 80))])
def test_torch_export_gives_the_models_logits_and_labels(mode, opts, hw):
    torch.manual_seed(0)
    model = mini_model(*opts).eval()
    image = torch.randn(1, 3, *hw, generator=torch.Generator().manual_seed(1))
    want = reference_logits(model, image)
    logits = export_program(SemanticExport(model), image).module()(image)
    assert logits.shape == (1, 3, *hw) and SemanticExport(model).mode == mode
    torch.testing.assert_close(logits[0], want, rtol=0, atol=1e-4)
    labels = export_program(SemanticExport(model, "labels"), image).module()(image)
    assert labels.dtype == torch.int64 and torch.equal(labels[0], want.argmax(0))


def test_onnx_export_runs_in_onnxruntime_with_the_models_numbers(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = mini_model().eval()
    image = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(2))
    path = export_onnx(SemanticExport(model), image, str(tmp_path / "m.onnx"))
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    out = torch.from_numpy(session.run(None, {"image": image.numpy()})[0])
    torch.testing.assert_close(out[0], reference_logits(model, image), rtol=0, atol=1e-4)


def test_the_tool_writes_loads_and_checks_the_program(tmp_path, capsys):
    code = export_model.main(["--config-file", config_path("rein_dinov2.yaml"), "--output", str(tmp_path / "rein"),
                      "--size", "64", "96", "--format", "torch_export", "--labels", *map(str, MINI)])
    assert code == 0 and (tmp_path / "rein.pt2").exists()
    printed = capsys.readouterr().out
    assert "torch_export: wrote" in printed and "largest difference to PyTorch 0" in printed
    program = torch.export.load(str(tmp_path / "rein.pt2"))
    assert program.module()(torch.zeros(1, 3, 64, 96)).shape == (1, 64, 96)
