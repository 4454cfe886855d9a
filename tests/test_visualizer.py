"""Readable overlays (rein_d2.utils.visualizer): labels inside the frame and off each other, a
legend of the classes present, visible colours for dark classes, a note for an empty panoptic
output, and instance colours kept across video frames."""
import numpy as np
import torch
from detectron2.data.catalog import Metadata
from detectron2.structures import Boxes, Instances
from detectron2.utils.video_visualizer import VideoVisualizer

from rein_d2.data.datasets import CITYSCAPES_CLASSES, CITYSCAPES_COLORS
from rein_d2.utils.visualizer import (MIN_LUMINANCE, draw_predictions, luminance, visible_color,
                                      visible_metadata)

H, W = 120, 200


def cityscapes():
    md = Metadata(name="test_visualizer_cityscapes")
    md.set(stuff_classes=list(CITYSCAPES_CLASSES), stuff_colors=[list(c) for c in CITYSCAPES_COLORS],
           thing_classes=list(CITYSCAPES_CLASSES), thing_colors=[list(c) for c in CITYSCAPES_COLORS])
    return visible_metadata(md)


def scores(labels, n=19):
    return torch.nn.functional.one_hot(torch.as_tensor(labels).long(), n).permute(2, 0, 1).float()


def test_dark_classes_are_drawn_light_enough_and_light_ones_unchanged():
    for c in CITYSCAPES_COLORS:
        v = visible_color(c)
        assert luminance(np.array(v) / 255) >= MIN_LUMINANCE - 0.01
        if luminance(np.array(c) / 255) >= MIN_LUMINANCE:
            assert v == list(c)
    truck = visible_color((0, 0, 70))  # Cityscapes' truck: nearly black
    assert truck[2] == max(truck) and truck != [0, 0, 70]  # still blue, now visible


def test_labels_stay_in_the_frame_apart_and_the_legend_lists_the_classes_present():
    # Ten classes in thin strips along the edges and a crowded corner: detectron2 alone puts
    # labels at each region's centre, partly outside the frame and over each other.
    labels = np.full((H, W), 0)
    for k, cls in enumerate((1, 2, 8, 10, 11, 13, 14, 15, 16, 18)):
        labels[:, W - 20 + 2 * k:W - 18 + 2 * k] = cls
        labels[H - 4:, 10 * k:10 * k + 10] = cls
    image = np.full((H, W, 3), 60, np.uint8)
    vis = draw_predictions(image, {"sem_seg": scores(labels)}, cityscapes())
    boxes = [b for _, b in vis.placed]
    for x0, y0, x1, y1 in boxes:
        assert 0 <= x0 and x1 <= W and 0 <= y0 and y1 <= H
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            a, b = boxes[i], boxes[j]
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]), (vis.placed[i], vis.placed[j])
    present = [CITYSCAPES_CLASSES[c] for c in sorted(set(labels.ravel().tolist()))]
    assert vis.legend_shown == present  # in columns when one does not fit the height
    assert [t for t, _ in vis.placed[:len(present)]] == present and vis.placed[len(present):]
    assert vis.output.get_image().shape == (H, W, 3)


def test_an_empty_panoptic_output_says_so_on_the_image():
    image = np.full((H, W, 3), 60, np.uint8)
    seg = torch.zeros((H, W), dtype=torch.int32)
    vis = draw_predictions(image, {"panoptic_seg": (seg, [])}, cityscapes(), no_segment_hint="lower X")
    assert [t for t, _ in vis.placed] == ["no segment: lower X"]
    assert not np.array_equal(vis.output.get_image(), image)


def _car(x0):
    inst = Instances((H, W))
    inst.pred_boxes = Boxes(torch.tensor([[x0, 30.0, x0 + 60, 90]]))
    masks = torch.zeros((1, H, W), dtype=torch.bool)
    masks[0, 30:90, int(x0):int(x0) + 60] = True
    inst.pred_masks = masks
    inst.pred_classes = torch.tensor([13])
    inst.scores = torch.tensor([0.9])
    return inst


def test_instance_colours_are_kept_from_frame_to_frame_in_a_video():
    image = np.full((H, W, 3), 60, np.uint8)
    md = cityscapes()
    video = VideoVisualizer(md)
    pixel = []
    for x0 in (40.0, 44.0, 48.0):  # the car moves a little between frames
        np.random.seed(len(pixel))  # detectron2 draws colours at random: a new draw per frame
        out = draw_predictions(image, {"instances": _car(x0)}, md, video=video).output.get_image()
        pixel.append(out[85, 55].tolist())  # inside every frame's mask, away from the label
    assert pixel[0] == pixel[1] == pixel[2]
    assert "car 90%" in [t for t, _ in draw_predictions(image, {"instances": _car(40.0)}, md).placed]


def test_the_demo_writes_browser_playable_video(tmp_path):
    import cv2

    from rein_d2.tools import demo
    writer, path = demo.open_video_writer(str(tmp_path / "v.webm"), 10.0, (64, 48))
    for i in range(3):
        writer.write(np.full((48, 64, 3), 40 * i, np.uint8))
    writer.release()
    assert path.endswith(".webm")
    with open(path, "rb") as f:
        head = f.read(64)
    assert head[:4] == b"\x1a\x45\xdf\xa3" and b"webm" in head  # an EBML header of doctype webm
    cap = cv2.VideoCapture(path)
    assert int(cap.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little") == b"VP80"
    cap.release()
