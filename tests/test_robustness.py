"""Corruption robustness: imagecorruptions applied deterministically (same seed, same image;
the cache gives the same pixels), and mIoU per corruption and severity, mPC and rPC on a tiny
dataset against figures computed here independently of detectron2's evaluator."""
import json

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("imagecorruptions")
pytest.importorskip("skimage")

from rein_d2.data.corruptions import COMMON, EXTRA, corrupt_image, corruption_names, cached_corruption  # noqa: E402
from rein_d2.evaluation.robustness import evaluate_robustness  # noqa: E402
from test_dg_evaluation import RedIsClassB, cfg, register  # noqa: E402,F401


def picture(seed=0, h=32, w=48):
    rng = np.random.default_rng(seed)
    image = np.zeros((h, w, 3), np.uint8)
    image[:, : w // 2, 0] = 200  # red left half
    return np.clip(image + rng.integers(0, 60, image.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("name", ["gaussian_noise", "impulse_noise", "glass_blur", "spatter", "fog"])
def test_a_corruption_is_the_same_for_the_same_seed_and_image(name, tmp_path):
    image = picture()
    a = corrupt_image(image, name, 3, seed=1, path="x/a.png")
    assert a.shape == image.shape and a.dtype == np.uint8 and not np.array_equal(a, image)
    assert np.array_equal(a, corrupt_image(image, name, 3, seed=1, path="x/a.png"))
    assert not np.array_equal(a, corrupt_image(image, name, 3, seed=2, path="x/a.png")) or name == "fog"
    cached = cached_corruption(image, name, 3, 1, "x/a.png", str(tmp_path))
    again = cached_corruption(image, name, 3, 1, "x/a.png", str(tmp_path))  # read from the cache
    assert np.array_equal(cached, a) and np.array_equal(again, a)


def test_corruption_names_expand_and_typos_are_refused():
    assert corruption_names(["all"]) == list(COMMON + EXTRA) and len(COMMON) == 15 and len(EXTRA) == 4
    assert corruption_names(["fog", "extra", "fog"]) == ["fog", *EXTRA]
    with pytest.raises(ValueError, match="unknown corruption 'fgo'"):
        corruption_names(["fgo"])


def miou_by_hand(pred_fn, images, labels):
    """Mean over classes present in the labels or predicted, of |P & G| / |P | G| (ignore 255)."""
    inter, union = np.zeros(3), np.zeros(3)
    for image, label in zip(images, labels):
        pred, valid = pred_fn(image), label != 255
        for c in range(3):
            p, g = (pred == c) & valid, (label == c) & valid
            inter[c] += (p & g).sum()
            union[c] += (p | g).sum()
    present = [c for c in range(3) if any((lab == c).any() for lab in labels)]  # detectron2's rule
    return 100 * float(np.mean([inter[c] / union[c] for c in present]))


def test_mpc_and_rpc_on_a_tiny_target_match_figures_computed_by_hand(tmp_path, cfg):  # noqa: F811
    images = [picture(0), picture(1)]
    labels = []
    for _ in images:
        label = np.zeros((32, 48), np.uint8)
        label[:, :24] = 1  # the red half is class b
        labels.append(label)
    name = register(tmp_path, images, labels, None)
    files = [str(tmp_path / f"{name}_{i}.png") for i in range(2)]
    corruptions, severities = ["brightness", "gaussian_noise"], [1, 3]
    summary = evaluate_robustness(cfg, RedIsClassB(), name, corruptions, severities, str(tmp_path / "out"), seed=5)

    def red_is_b(image):
        return (image[..., 0] > 127).astype(int)
    clean = miou_by_hand(red_is_b, images, labels)
    assert summary.clean == pytest.approx(clean)
    expected = {c: {s: miou_by_hand(red_is_b, [corrupt_image(im, c, s, 5, f) for im, f in zip(images, files)], labels)
                    for s in severities} for c in corruptions}
    for c in corruptions:
        for s in severities:
            assert summary.miou[c][s] == pytest.approx(expected[c][s]), (c, s)
    mpc = np.mean([v for sev in expected.values() for v in sev.values()])
    assert summary.mpc == pytest.approx(mpc) and summary.rpc == pytest.approx(mpc / clean)
    data = json.loads((tmp_path / "out" / f"robustness_{name}.json").read_text())
    assert data["mPC"] == pytest.approx(mpc) and data["mIoU"]["brightness"]["3"] == pytest.approx(expected["brightness"][3])
    assert (tmp_path / "out" / f"robustness_{name}.png").stat().st_size > 1000
    assert "mPC" in summary.table() and "gaussian_noise" in summary.table()


def test_list_options_give_back_the_config_overrides_they_swallowed():
    import argparse

    from rein_d2.utils.cli import reclaim_overrides
    args = argparse.Namespace(corruptions=["fog", "brightness"], severities=["1", "3", "MODEL.WEIGHTS", "w.pth"],
                              opts=["SEED", "3"])
    reclaim_overrides(args, "corruptions", "severities")
    assert args.severities == ["1", "3"] and args.opts == ["MODEL.WEIGHTS", "w.pth", "SEED", "3"]
    assert args.corruptions == ["fog", "brightness"]
