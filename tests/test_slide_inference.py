"""Sliding-window semantic inference (MODEL.MASK2FORMER.TEST.MODE "slide")."""
import pytest
import torch

from test_meta_arch import mini_model


def slide_model(crop, stride, batch=8, *extra):
    return mini_model("MODEL.MASK2FORMER.TEST.MODE", "slide", "MODEL.MASK2FORMER.TEST.CROP_SIZE", crop,
                      "MODEL.MASK2FORMER.TEST.STRIDE", stride,
                      "MODEL.MASK2FORMER.TEST.CROP_BATCH_SIZE", batch, *extra).eval()


def reference_windows(h, w, crop, stride):
    """The reference's loop (mmseg EncoderDecoder.slide_inference), written out independently."""
    (ch, cw), (sh, sw) = crop, stride
    ch, cw = min(ch, h), min(cw, w)
    out = []
    for r in range(max(h - ch + sh - 1, 0) // sh + 1):
        for c in range(max(w - cw + sw - 1, 0) // sw + 1):
            y1, x1 = r * sh, c * sw
            y2, x2 = min(y1 + ch, h), min(x1 + cw, w)
            out.append((max(y2 - ch, 0), max(x2 - cw, 0), y2, x2))
    return out


def windowed_by_hand(whole, image, crop, stride):
    """Average of whole-image predictions of each window, accumulated as the reference does."""
    _, h, w = image.shape
    total, count = 0, torch.zeros(1, h, w)
    for y1, x1, y2, x2 in reference_windows(h, w, crop, stride):
        with torch.no_grad():
            pred = whole([{"image": image[:, y1:y2, x1:x2]}])[0]["sem_seg"]
        total = total + torch.nn.functional.pad(pred, (x1, w - x2, y1, h - y2))
        count[:, y1:y2, x1:x2] += 1
    assert count.min() >= 1
    return total / count


@pytest.fixture(scope="module")
def image():
    g = torch.Generator().manual_seed(3)
    return torch.rand(3, 1024, 2048, generator=g) * 255


def test_window_covering_the_image_equals_whole_inference(image):
    torch.manual_seed(0)
    whole = mini_model().eval()
    torch.manual_seed(0)
    slide = slide_model((1024, 2048), (683, 683))
    assert slide.slide_windows(1024, 2048)[0] == [(0, 0)]
    with torch.no_grad():
        a = whole([{"image": image}])[0]["sem_seg"]
        b = slide([{"image": image}])[0]["sem_seg"]
    assert a.shape == b.shape == (3, 1024, 2048)
    assert torch.allclose(a, b, atol=1e-6)


def test_1024x2048_in_512_windows_equals_the_reference_loop(image):
    torch.manual_seed(0)
    whole = mini_model().eval()
    torch.manual_seed(0)
    slide = slide_model((512, 512), (341, 341), 8)
    corners, size = slide.slide_windows(1024, 2048)
    assert len(corners) == 3 * 6 and size == (512, 512)  # the spec's 512 / 341 grid
    passes = []
    predict = slide.predict_logits
    slide.predict_logits = lambda crops: passes.append(crops.shape) or predict(crops)
    with torch.no_grad():
        out = slide([{"image": image, "height": 1024, "width": 2048}])[0]["sem_seg"]
    assert passes == [(6, 3, 512, 512)] * 3  # 18 windows by at most 8: three even passes
    expected = windowed_by_hand(whole, image, (512, 512), (341, 341))
    assert out.shape == (3, 1024, 2048)
    assert torch.allclose(out, expected, atol=1e-5)


@pytest.mark.parametrize("h,w", [(100, 150), (50, 70), (64, 200)])
def test_uneven_borders_and_images_smaller_than_the_crop(h, w):
    torch.manual_seed(1)
    image = torch.rand(3, h, w) * 255
    torch.manual_seed(0)
    whole = mini_model().eval()
    torch.manual_seed(0)
    slide = slide_model((64, 64), (48, 48), 3)  # passes of at most 3 windows
    corners, (ch, cw) = slide.slide_windows(h, w)
    assert [(y, x, y + ch, x + cw) for y, x in corners] == reference_windows(h, w, (64, 64), (48, 48))
    with torch.no_grad():
        out = slide([{"image": image, "height": 2 * h, "width": 2 * w}])[0]["sem_seg"]
        raw = slide.slide_semantic((image - slide.pixel_mean) / slide.pixel_std)
    assert out.shape == (3, 2 * h, 2 * w)  # resized to the requested output size
    assert torch.allclose(raw, windowed_by_hand(whole, image, (64, 64), (48, 48)), atol=1e-5)


def test_crop_batch_size_does_not_change_the_result():
    image = torch.rand(3, 96, 160) * 255
    outs = []
    for batch in (1, 4, 16):
        torch.manual_seed(0)
        with torch.no_grad():
            outs.append(slide_model((64, 64), (32, 32), batch)([{"image": image}])[0]["sem_seg"])
    assert torch.allclose(outs[0], outs[1], atol=1e-5) and torch.allclose(outs[0], outs[2], atol=1e-5)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="'whole' or 'slide'"):
        mini_model("MODEL.MASK2FORMER.TEST.MODE", "tiles")
    with pytest.raises(ValueError, match="semantic segmentation only"):
        mini_model("MODEL.MASK2FORMER.TEST.MODE", "slide", "MODEL.MASK2FORMER.TEST.INSTANCE_ON", True)
