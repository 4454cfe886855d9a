"""SemanticDatasetMapper and its training augmentation (docs/method.md section 5, mmseg semantics)."""
import re

import cv2
import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import transforms as T
from PIL import Image

from rein_d2 import add_rein_config
from rein_d2.data import SemanticDatasetMapper, build_test_mapper, build_train_mapper
from rein_d2.data.dataset_mappers.semantic import (
    CategoryAreaCrop,
    CV2ResizeTransform,
    PhotometricDistortion,
    PhotometricDistortionTransform,
    build_semantic_train_augmentation,
)
from conftest import config_path

SPEC_SHORT_SIDES = [int(512 * x * 0.1) for x in range(5, 21)]  # 256, 307, ..., 1024


def make_cfg(*opts):
    cfg = add_rein_config(get_cfg())
    cfg.merge_from_file(config_path("Base-Rein.yaml"))
    cfg.merge_from_list([
        "INPUT.MIN_SIZE_TRAIN", SPEC_SHORT_SIDES, "INPUT.MIN_SIZE_TRAIN_SAMPLING", "choice",
        "INPUT.MAX_SIZE_TRAIN", 2048, "INPUT.CROP.ENABLED", True, "INPUT.CROP.TYPE", "absolute",
        "INPUT.CROP.SIZE", [512, 512], *opts,
    ])
    return cfg


def write_pair(tmp_path, image, label, name="a"):
    img_path, seg_path = str(tmp_path / f"{name}.png"), str(tmp_path / f"{name}_label.png")
    Image.fromarray(image).save(img_path)
    Image.fromarray(label).save(seg_path)
    return {"file_name": img_path, "sem_seg_file_name": seg_path,
            "height": image.shape[0], "width": image.shape[1]}


def random_pair(h=64, w=96, values=(0, 1, 2, 255), seed=0):
    rng = np.random.RandomState(seed)
    image = rng.randint(0, 256, (h, w, 3), dtype=np.uint8)
    label = np.asarray(values, dtype=np.uint8)[rng.randint(0, len(values), (h, w))]
    return image, label


def test_training_output_is_the_crop_padded_with_ignore_and_mean(tmp_path):
    cfg = make_cfg("INPUT.MIN_SIZE_TRAIN", [256])  # 64x96 -> 256x384: smaller than the crop
    mapper = SemanticDatasetMapper(cfg, is_train=True)
    d = write_pair(tmp_path, *random_pair())
    np.random.seed(0)
    out = mapper(d)
    image, seg = out["image"], out["sem_seg"]
    assert image.shape == (3, 512, 512) and image.dtype == torch.float32
    assert seg.shape == (512, 512) and seg.dtype == torch.long
    assert (out["height"], out["width"], out["file_name"]) == (64, 96, d["file_name"])
    assert (seg[256:] == 255).all() and (seg[:, 384:] == 255).all()
    assert set(seg[:256, :384].unique().tolist()) == {0, 1, 2, 255}
    # The reference pads after normalising, with 0: padded pixels are the pixel mean here.
    mean = torch.tensor(cfg.MODEL.PIXEL_MEAN).view(3, 1)
    assert torch.equal(image[:, 256:].reshape(3, -1), mean.expand(3, 256 * 512))
    assert torch.equal(image[:, :, 384:].reshape(3, -1), mean.expand(3, 512 * 128))
    assert image.min() >= 0 and image.max() <= 255


def test_image_pad_value_is_configurable(tmp_path):
    cfg = make_cfg("INPUT.MIN_SIZE_TRAIN", [256])
    mapper = SemanticDatasetMapper(**{**SemanticDatasetMapper.from_config(cfg),
                                      "image_pad_value": 0})
    out = mapper(write_pair(tmp_path, *random_pair()))
    assert (out["image"][:, 256:] == 0).all() and (out["sem_seg"][256:] == 255).all()


def test_label_values_only_come_from_the_source_label(tmp_path):
    # Per-pixel random labels: any interpolation other than nearest would create new values.
    mapper = SemanticDatasetMapper(make_cfg(), is_train=True)
    d = write_pair(tmp_path, *random_pair(40, 60, values=(3, 7, 11, 255)))
    for seed in range(6):
        np.random.seed(seed)
        assert set(mapper(d)["sem_seg"].unique().tolist()) <= {3, 7, 11, 255}


def test_short_side_is_drawn_from_the_spec_set():
    resize_aug = build_semantic_train_augmentation(make_cfg())[0]
    image = random_pair(64, 96)[0]
    seen = set()
    np.random.seed(0)
    for _ in range(300):
        resize = resize_aug.get_transform(image)
        assert isinstance(resize, CV2ResizeTransform)
        short = min(resize.new_h, resize.new_w)
        assert short in SPEC_SHORT_SIDES, short
        assert resize.new_w == int(short * 1.5 + 0.5)  # aspect ratio kept
        seen.add(short)
    assert len(seen) == len(SPEC_SHORT_SIDES)


def test_long_side_is_capped_at_max_size():
    resize = build_semantic_train_augmentation(make_cfg("INPUT.MIN_SIZE_TRAIN", [1024]))[0]
    t = resize.get_transform(np.zeros((64, 640, 3), np.uint8))
    assert (t.new_h, t.new_w) == (205, 2048)  # 1024 x 10240 scaled down to a 2048 long side


def test_capped_size_is_rounded_twice_as_mmcv_does():
    # mmseg's ResizeShortestEdge: 300x1000 at short 1024 is 1024x3413.3, capped to 614.4x2048,
    # rounded to (614, 2048). mmcv's imrescale then fits the image in (2048, 614): factor
    # min(2048 / 1000, 614 / 300) = 2.04667, so 614 x int(2046.67 + 0.5) = 614 x 2047.
    resize = build_semantic_train_augmentation(make_cfg("INPUT.MIN_SIZE_TRAIN", [1024]))[0]
    t = resize.get_transform(np.zeros((300, 1000, 3), np.uint8))
    assert (t.new_h, t.new_w) == (614, 2047)
    assert T.ResizeShortestEdge.get_output_shape(300, 1000, 1024, 2048) == (614, 2048)


def test_resize_is_opencv_bilinear_for_images_and_nearest_for_labels():
    image, label = random_pair(40, 60, values=(3, 7, 11, 255))
    t = CV2ResizeTransform(40, 60, 67, 101)
    resized = t.apply_image(image)
    assert np.array_equal(resized, cv2.resize(image, (101, 67), interpolation=cv2.INTER_LINEAR))
    assert np.array_equal(t.apply_segmentation(label),
                          cv2.resize(label, (101, 67), interpolation=cv2.INTER_NEAREST))
    # not what PIL (detectron2's ResizeTransform) gives
    assert not np.array_equal(resized, T.ResizeTransform(40, 60, 67, 101).apply_image(image))
    grey = t.apply_image(image[..., :1])
    assert grey.shape == (67, 101, 1) and np.array_equal(grey[..., 0], resized[..., 0])


def category_rule(crop, ratio=0.75, ignore=255):
    """mmseg RandomCrop(cat_max_ratio): >1 class among non-ignore pixels, largest < ratio."""
    labels, counts = np.unique(crop, return_counts=True)
    counts = counts[labels != ignore]
    return len(counts) > 1 and counts.max() / counts.sum() < ratio


def scripted_randint(monkeypatch, values):
    """np.random.randint answers ``values`` in order (the draws the reference would consume);
    returns the list of (high bound) of each call, to check what was asked."""
    queue, highs = list(values), []

    def randint(low, high=None, size=None):
        highs.append(low if high is None else high)
        return queue.pop(0)
    monkeypatch.setattr(np.random, "randint", randint)
    return highs


def test_category_crop_replays_the_reference_rule_on_scripted_draws(monkeypatch):
    crop = CategoryAreaCrop("absolute", (20, 20), 0.75, 255)
    label = np.zeros((40, 50), np.uint8)
    label[:20, :10] = 1       # box (0, 0): half class 1, half class 0 -> accepted
    label[20:, 40:] = 255     # box (20, 30): class 0 and ignore only -> one class, rejected
    label[:20, 30:35] = 2     # box (0, 30): class 2 on 100 of 400 pixels: 0 has exactly 0.75
    image = np.zeros((40, 50, 3), np.uint8)
    # mmseg draws the top offset, then the left, each randint(0, margin + 1)
    highs = scripted_randint(monkeypatch, [20, 30, 0, 30, 0, 0, 9, 9])
    t = crop.get_transform(image, label)
    assert (t.y0, t.x0, t.h, t.w) == (0, 0, 20, 20)  # third box, the first accepted
    assert highs == [21, 31] * 3  # 0.75 is not below 0.75: the second box was rejected too
    # all 10 checked boxes fail: an 11th is drawn and kept without a check (detectron2: the 10th)
    highs = scripted_randint(monkeypatch, [20, 30] * 10 + [7, 3])
    t = crop.get_transform(image, label)
    assert (t.y0, t.x0) == (7, 3) and len(highs) == 22
    # ratio 1.0: one box, no check, as mmseg's RandomCrop without cat_max_ratio
    highs = scripted_randint(monkeypatch, [20, 30])
    t = CategoryAreaCrop("absolute", (20, 20), 1.0, 255).get_transform(image, label)
    assert (t.y0, t.x0) == (20, 30) and highs == [21, 31]
    # a crop larger than the image: offsets from randint(0, 1), the crop clipped to the image
    highs = scripted_randint(monkeypatch, [0, 0])
    t = CategoryAreaCrop("absolute", (64, 20), 0.9, 255).get_transform(image, label)  # 0.75 < 0.9
    assert (t.y0, t.x0, t.h, t.w) == (0, 0, 40, 20) and highs == [1, 31]


def test_category_area_constraint_follows_the_reference_rule(monkeypatch):
    crop_aug = build_semantic_train_augmentation(make_cfg("INPUT.CROP.SIZE", [64, 64]))[1]
    assert isinstance(crop_aug, CategoryAreaCrop)
    assert (crop_aug.single_category_max_area, crop_aug.ignored_category) == (0.75, 255)
    # About 90% one class, a small block of another, an ignored band.
    label = np.zeros((200, 200), np.uint8)
    label[100:150, 60:120] = 1
    label[:20] = 255
    image = np.zeros((200, 200, 3), np.uint8)

    draws = []
    randint = np.random.randint

    def recording_randint(*args, **kwargs):
        draws.append(randint(*args, **kwargs))
        return draws[-1]

    monkeypatch.setattr(np.random, "randint", recording_randint)
    np.random.seed(0)
    accepted_after_retry = fallbacks = 0
    for _ in range(60):
        draws.clear()
        t = crop_aug.get_transform(image, label)
        tries = list(zip(draws[::2], draws[1::2]))  # (y0, x0) per box
        ok = [category_rule(label[y:y + 64, x:x + 64]) for y, x in tries[:10]]
        assert (t.h, t.w) == (64, 64)
        if any(ok):  # the first crop obeying the rule is taken
            k = ok.index(True)
            assert len(tries) == k + 1 and (t.y0, t.x0) == tries[k]
            accepted_after_retry += k > 0
        else:  # none of 10 checked boxes: an 11th, unchecked
            assert len(tries) == 11 and (t.y0, t.x0) == tries[-1]
            fallbacks += 1
    assert accepted_after_retry > 0 and 0 < fallbacks < 60


def reference_pipeline(image, label, seed, scales, max_size, crop, ratio=0.75, ignore=255):
    """mmseg 1.2.2's RandomChoiceResize(resize_type="ResizeShortestEdge") -> RandomCrop(crop,
    cat_max_ratio) -> RandomFlip(prob=0.5), written from its semantics: numpy's global RNG
    seeded with ``seed``, drawn in the reference's order."""
    np.random.seed(seed)
    short = scales[np.random.randint(len(scales))]
    h, w = label.shape
    scale = short / min(h, w)
    new_h, new_w = (short, scale * w) if h < w else (scale * h, short)
    if max(new_h, new_w) > max_size:
        new_h, new_w = new_h * max_size / max(new_h, new_w), new_w * max_size / max(new_h, new_w)
    target = (int(new_w + 0.5), int(new_h + 0.5))
    factor = min(max(target) / max(h, w), min(target) / min(h, w))  # mmcv.imrescale
    size = (int(w * factor + 0.5), int(h * factor + 0.5))
    image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
    label = cv2.resize(label, size, interpolation=cv2.INTER_NEAREST)

    def box():
        top = np.random.randint(0, max(label.shape[0] - crop, 0) + 1)
        left = np.random.randint(0, max(label.shape[1] - crop, 0) + 1)
        return slice(top, top + crop), slice(left, left + crop)

    b = box()
    for _ in range(10):
        if category_rule(label[b], ratio, ignore):
            break
        b = box()
    image, label = image[b], label[b]
    if np.random.choice(["horizontal", None], p=[0.5, 0.5]) == "horizontal":
        image, label = image[:, ::-1], label[:, ::-1]
    return image, label


def test_mapper_replays_the_reference_pipeline_on_fixed_seeds(tmp_path):
    scales, max_size, crop = [16, 24, 40, 64], 120, 32
    cfg = make_cfg("INPUT.MIN_SIZE_TRAIN", scales, "INPUT.MAX_SIZE_TRAIN", max_size,
                   "INPUT.CROP.SIZE", [crop, crop], "INPUT.COLOR_AUG_SSD", False)
    mapper = SemanticDatasetMapper(cfg, is_train=True)
    # A wide frame: short sides 40 and 64 are capped to 36 x 120, which mmcv makes 36 x 119.
    # Background covers most of it: boxes are accepted at the first try, after a few, or an
    # 11th is kept unchecked. Smooth colours, where OpenCV and PIL resizing differ.
    image, label = random_pair(30, 99, values=(0, 1, 2, 255))
    label[:, :70] = 0
    image = cv2.GaussianBlur(image, (5, 5), 0)
    d = write_pair(tmp_path, image, label)
    for seed in range(12):
        want_image, want_label = reference_pipeline(image, label, seed, scales, max_size, crop)
        np.random.seed(seed)
        out = mapper(d)
        h, w = want_label.shape
        assert torch.equal(out["sem_seg"][:h, :w], torch.as_tensor(want_label.astype(np.int64)))
        assert torch.equal(out["image"][:, :h, :w],
                           torch.as_tensor(np.ascontiguousarray(want_image.transpose(2, 0, 1))).float())
        assert (out["sem_seg"][h:] == 255).all() and (out["sem_seg"][:, w:] == 255).all()


def test_flip_moves_image_and_label_together(tmp_path):
    cfg = make_cfg("INPUT.MIN_SIZE_TRAIN", [64], "INPUT.CROP.ENABLED", False,
                   "INPUT.COLOR_AUG_SSD", False)
    cols = np.arange(96)
    image = np.broadcast_to((cols * 2).astype(np.uint8)[None, :, None], (64, 96, 3)).copy()
    label = np.broadcast_to(((cols // 8) % 3).astype(np.uint8), (64, 96)).copy()
    mapper = SemanticDatasetMapper(cfg, is_train=True)
    d = write_pair(tmp_path, image, label)
    flipped = set()
    np.random.seed(0)
    for _ in range(12):
        out = mapper(d)
        img_cols = out["image"][0, 0].long() // 2
        assert torch.equal(out["sem_seg"], ((img_cols // 8) % 3).expand(64, 96))
        flipped.add(bool(img_cols[0] == 95))
    assert flipped == {True, False}


def test_photometric_distortion_changes_only_the_image(tmp_path):
    d = write_pair(tmp_path, *random_pair(80, 120))
    with_color = SemanticDatasetMapper(make_cfg(), is_train=True)
    without = SemanticDatasetMapper(make_cfg("INPUT.COLOR_AUG_SSD", False), is_train=True)
    changed = 0
    for seed in range(4):
        np.random.seed(seed)
        a = with_color(d)
        np.random.seed(seed)  # the distortion draws last: resize, crop and flip coincide
        b = without(d)
        assert torch.equal(a["sem_seg"], b["sem_seg"])
        assert a["image"].min() >= 0 and a["image"].max() <= 255
        changed += not torch.equal(a["image"], b["image"])
    assert changed > 0


def test_photometric_draws_follow_the_reference_order():
    image = random_pair()[0]
    hues = set()
    for seed in range(200):
        np.random.seed(seed)
        t = PhotometricDistortion().get_transform(image)
        np.random.seed(seed)
        brightness = np.random.uniform(-32, 32) if np.random.randint(2) else None
        contrast_first = np.random.randint(2) == 1
        assert t.brightness == brightness and t.contrast_first == contrast_first
        if t.hue is not None:
            hues.add(t.hue)
        for v in (t.contrast, t.saturation):
            assert v is None or 0.5 <= v <= 1.5
    assert min(hues) >= -18 and max(hues) <= 17 and len(hues) > 20


def test_brightness_step_equals_hand_computation():
    img = np.array([[[0, 10, 100], [200, 250, 255]]], np.uint8)
    t = PhotometricDistortionTransform(brightness=-20.7)
    assert np.array_equal(t.apply_image(img), [[[0, 0, 79], [179, 229, 234]]])  # clip, truncate
    t = PhotometricDistortionTransform(brightness=20.7)
    assert np.array_equal(t.apply_image(img), [[[20, 30, 120], [220, 255, 255]]])
    # A seeded draw that turned on brightness only, against the same draw made by hand.
    image = random_pair()[0]
    for seed in range(100):
        np.random.seed(seed)
        t = PhotometricDistortion().get_transform(image)
        if t.brightness is not None and (t.contrast, t.saturation, t.hue) == (None,) * 3:
            break
    np.random.seed(seed)
    assert np.random.randint(2) == 1
    delta = np.random.uniform(-32, 32)
    expected = np.clip(image.astype(np.float32) + delta, 0, 255).astype(np.uint8)
    assert np.array_equal(t.apply_image(image), expected)


def test_distortion_keeps_uint8_range_and_leaves_labels():
    image, label = random_pair()
    for seed in range(20):
        np.random.seed(seed)
        t = PhotometricDistortion().get_transform(image)
        out = t.apply_image(image)
        assert out.dtype == np.uint8 and out.shape == image.shape
        assert t.apply_segmentation(label) is label
    # Contrast and hue by hand on one pixel (OpenCV 8-bit HSV: H in 0..179).
    px = np.array([[[200, 100, 50]]], np.uint8)
    assert np.array_equal(PhotometricDistortionTransform(contrast=1.5).apply_image(px),
                          [[[255, 150, 75]]])
    shifted = PhotometricDistortionTransform(hue=-18).apply_image(px)
    h = int(cv2.cvtColor(px, cv2.COLOR_RGB2HSV)[0, 0, 0])  # (a uint8 would wrap under numpy 2)
    assert cv2.cvtColor(shifted, cv2.COLOR_RGB2HSV)[0, 0, 0] in {(h - 18) % 180, (h - 19) % 180,
                                                                  (h - 17) % 180}


def test_test_mode_keeps_image_and_label_unchanged(tmp_path):
    image, label = random_pair(50, 70)
    d = write_pair(tmp_path, image, label)
    out = SemanticDatasetMapper(make_cfg(), is_train=False)(d)
    assert torch.equal(out["image"], torch.from_numpy(image).permute(2, 0, 1).float())
    assert torch.equal(out["sem_seg"], torch.from_numpy(label).long())
    assert (out["height"], out["width"]) == (50, 70)
    no_label = {k: v for k, v in d.items() if k not in ("sem_seg_file_name", "height", "width")}
    out = SemanticDatasetMapper(make_cfg(), is_train=False)(no_label)
    assert "sem_seg" not in out and (out["height"], out["width"]) == (50, 70)


def test_clear_errors(tmp_path):
    mapper = SemanticDatasetMapper(make_cfg(), is_train=True)
    d = write_pair(tmp_path, *random_pair())
    bad = tmp_path / "corrupt.png"
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(OSError, match=re.escape(str(bad))):
        mapper({**d, "file_name": str(bad)})
    with pytest.raises(OSError, match=re.escape(str(bad))):
        mapper({**d, "sem_seg_file_name": str(bad)})
    small = write_pair(tmp_path, *random_pair(32, 48), name="small")
    with pytest.raises(ValueError) as err:
        mapper({**d, "sem_seg_file_name": small["sem_seg_file_name"]})
    msg = str(err.value)
    assert d["file_name"] in msg and small["sem_seg_file_name"] in msg
    assert "96x64" in msg and "48x32" in msg
    with pytest.raises(ValueError, match="sem_seg_file_name"):
        mapper({k: v for k, v in d.items() if k != "sem_seg_file_name"})


def test_mapper_dispatch_on_config():
    cfg = make_cfg()
    assert isinstance(build_train_mapper(cfg), SemanticDatasetMapper)
    assert not build_test_mapper(cfg).is_train
    cfg.INPUT.DATASET_MAPPER_NAME = "nonsense"
    with pytest.raises(ValueError, match="nonsense"):
        build_train_mapper(cfg)


def test_label_values_outside_the_classes_are_listed_alone_with_the_file(tmp_path):
    mapper = SemanticDatasetMapper(make_cfg(), is_train=True)  # 19 classes, ignore 255
    image, label = random_pair()
    label[0, :3] = [40, 19, 254]
    d = write_pair(tmp_path, image, label)
    with pytest.raises(ValueError) as err:
        mapper(d)
    msg = str(err.value)
    # Only the values out of range (not 0, 1, 2 nor 255), the file, the expected range.
    assert re.search(r"values 19, 40, 254 outside the classes 0\.\.18 and ignore 255", msg)
    assert d["sem_seg_file_name"] in msg and "\n" not in msg
    label[0, :3] = [18, 0, 255]  # every value in range: accepted
    np.random.seed(0)
    assert mapper(write_pair(tmp_path, image, label, name="ok"))["sem_seg"].max() == 255


def test_label_of_another_size_names_both_files_sizes_and_the_fix(tmp_path):
    mapper = SemanticDatasetMapper(make_cfg(), is_train=True)
    d = write_pair(tmp_path, *random_pair(64, 96))
    other = write_pair(tmp_path, *random_pair(96, 64), name="rotated")  # same pixels, transposed
    with pytest.raises(ValueError) as err:
        mapper({**d, "sem_seg_file_name": other["sem_seg_file_name"]})
    msg = str(err.value)
    assert d["file_name"] in msg and other["sem_seg_file_name"] in msg
    assert "64x96" in msg and "96x64" in msg
    assert "preparation script" in msg and "\n" not in msg


def test_a_positioned_sample_gets_the_same_reference_draws_wherever_it_is_mapped(tmp_path):
    # Exact resume: the sample at stream position k is resized, cropped, flipped and coloured
    # the same way whatever the worker's RNG state (rein_d2/data/samplers.py).
    from rein_d2.data import PositionedDataset, SeededMapper
    cfg = make_cfg("INPUT.MIN_SIZE_TRAIN", [16, 24, 40, 64], "INPUT.MAX_SIZE_TRAIN", 120,
                   "INPUT.CROP.SIZE", [32, 32])
    mapper = SeededMapper(SemanticDatasetMapper(cfg, is_train=True), seed=3)
    image, label = random_pair(30, 99, values=(0, 1, 2, 255))
    dataset = PositionedDataset([write_pair(tmp_path, image, label)])
    first = [mapper(dataset[k]) for k in range(6)]
    np.random.seed(123)  # another worker's state
    again = [mapper(dataset[k]) for k in (3, 1)]
    for k, out in zip((3, 1), again):
        assert torch.equal(out["image"], first[k]["image"])
        assert torch.equal(out["sem_seg"], first[k]["sem_seg"])
    assert len({first[k]["image"].sum().item() for k in range(6)}) > 1  # positions differ
