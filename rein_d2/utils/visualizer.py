"""Overlays a person can read: detectron2's Visualizer with
- labels kept inside the frame and off each other (a label with no free place is dropped; the
  legend still names its class),
- a legend of the classes present,
- mask and label colours light enough to see (dark classes such as Cityscapes' truck, bus or
  train are drawn lighter, the same in the masks and the legend), text black or white by the
  colour under it,
- a note on the image when a panoptic output holds no segment,
- instance colours kept from frame to frame in videos (detectron2's VideoVisualizer matching).
"""
from typing import List, Optional, Sequence, Tuple

import numpy as np
from detectron2.data import MetadataCatalog
from detectron2.data.catalog import Metadata
from detectron2.utils.colormap import colormap
from detectron2.utils.video_visualizer import VideoVisualizer, _DetectedInstance
from detectron2.utils.visualizer import ColorMode, Visualizer

from ..data.datasets import CITYSCAPES_CLASSES, CITYSCAPES_COLORS

__all__ = ["NO_SEGMENT_HINT", "OverlayDrawer", "ReadableVisualizer", "demo_metadata", "draw_predictions",
           "luminance", "visible_color", "visible_metadata"]

MIN_LUMINANCE = 0.3  # colours darker than this are mixed with white until they reach it


def luminance(rgb: Sequence[float]) -> float:
    """Relative luminance (ITU-R BT.709 weights) of an RGB colour in 0..1."""
    r, g, b = rgb
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def visible_color(rgb255: Sequence[int]) -> List[int]:
    """``rgb255`` (0..255) mixed with white just enough to reach MIN_LUMINANCE; lighter
    colours are returned unchanged."""
    c = np.asarray(rgb255, dtype=np.float64) / 255.0
    lum = luminance(c)
    if lum < MIN_LUMINANCE:
        k = (MIN_LUMINANCE - lum) / (1.0 - lum)  # luminance is linear in the mix
        c = c + (1.0 - c) * k
    return [int(round(v)) for v in np.clip(c * 255.0, 0, 255)]


def visible_metadata(metadata: Metadata) -> Metadata:
    """A copy of ``metadata`` whose stuff and thing colours are visible_color()'s."""
    out = Metadata(name=metadata.name + ":visible")
    values = {k: v for k, v in metadata.as_dict().items() if k != "name"}
    for key in ("stuff_colors", "thing_colors"):
        if values.get(key) is not None:
            values[key] = [visible_color(c) for c in values[key]]
    out.set(**values)
    return out


def _boxes_overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


class ReadableVisualizer(Visualizer):
    """detectron2's Visualizer whose labels are placed by :meth:`finish`, inside the frame and
    without overlap, with a legend. Call a draw_* method, then :meth:`finish`."""

    def __init__(self, img_rgb, metadata, scale=1.0, instance_mode=ColorMode.IMAGE):
        super().__init__(img_rgb, metadata, scale=scale, instance_mode=instance_mode)
        self._labels = []  # (text, (x, y), font_size, horizontal alignment)
        self._legend = []  # (name, colour 0..1)
        self.placed = []  # after finish(): (text, (x0, y0, x1, y1)) of each legend row and label
        self.dropped = []  # after finish(): labels that found no free place
        self.legend_shown = []  # after finish(): the legend's rows

    # detectron2 calls draw_text for every label: keep them for finish() instead.
    def draw_text(self, text, position, *, font_size=None, color="g", horizontal_alignment="center",
                  rotation=0):
        self._labels.append((text, tuple(position), font_size or self._default_font_size,
                             horizontal_alignment))
        return self.output

    def add_legend(self, names_and_colors: Sequence[Tuple[str, Sequence[int]]]):
        """Entries (name, RGB 0..255) for the legend, in order."""
        self._legend.extend((n, np.asarray(c, dtype=np.float64) / 255.0) for n, c in names_and_colors)

    def note(self, text: str):
        """A line of text at the top centre of the image (placed like the labels, first)."""
        self._labels.insert(0, (text, (self.output.width / 2, 2), self._default_font_size, "center"))

    def _text(self, text, x, y, size, halign, face):
        fg = "black" if luminance(face) > 0.5 else "white"
        return self.output.ax.text(
            x, y, text, size=size * self.output.scale, family="sans-serif", color=fg, zorder=10,
            verticalalignment="top", horizontalalignment=halign,
            bbox={"facecolor": face, "alpha": 0.85, "pad": 1.5, "edgecolor": "none"})

    def _extent(self, artist, renderer):
        """The artist's box (x0, y0, x1, y1) in image pixels (y down)."""
        box = artist.get_window_extent(renderer).transformed(self.output.ax.transData.inverted())
        return min(box.x0, box.x1), min(box.y0, box.y1), max(box.x0, box.x1), max(box.y0, box.y1)

    def _place(self, artist, renderer, taken, try_shifts=True) -> bool:
        """Move ``artist`` inside the image, then up or down past the boxes in ``taken``;
        remove it when no place is free. Returns whether it stayed."""
        w, h = self.output.width, self.output.height
        x0, y0, x1, y1 = self._extent(artist, renderer)
        dx = max(0.0, -x0) - max(0.0, x1 - w)
        dy = max(0.0, -y0) - max(0.0, y1 - h)
        height = y1 - y0
        shifts = [0.0] + ([s * k * height for k in range(1, 7) for s in (1, -1)] if try_shifts else [])
        x, y = artist.get_position()
        for shift in shifts:
            box = (x0 + dx, y0 + dy + shift, x1 + dx, y1 + dy + shift)
            if box[1] < 0 or box[3] > h:
                continue
            if not any(_boxes_overlap(box, t) for t in taken):
                artist.set_position((x + dx, y + dy + shift))
                taken.append(box)
                return True
        artist.remove()
        return False

    def finish(self):
        """Draw the legend (top left), then every label that has a free place."""
        renderer = self.output.fig.canvas.get_renderer()
        taken = []
        size = max(self._default_font_size * 0.9, 6)
        x, y, column_right = 2.0, 2.0, 2.0
        for name, colour in self._legend:  # rows down the left edge, then a next column
            artist = self._text(name, x, y, size, "left", colour)
            if self._extent(artist, renderer)[3] > self.output.height and y > 2.0:
                x, y = column_right + 4.0, 2.0
                artist.set_position((x, y))
            if not self._place(artist, renderer, taken, try_shifts=False):
                break  # wider than what is left of the frame
            self.placed.append((name, taken[-1]))
            self.legend_shown.append(name)
            y, column_right = taken[-1][3] + 2.0, max(column_right, taken[-1][2])
        for text, (x, y), font_size, halign in self._labels:
            face = self._label_face(text)
            if self._place(self._text(text, x, y, font_size, halign, face), renderer, taken):
                self.placed.append((text, taken[-1]))
            else:
                self.dropped.append(text)
        return self.output

    def _label_face(self, text):
        for name, colour in self._legend:
            if text == name or text.startswith(name + " "):
                return colour
        return np.array([0.1, 0.1, 0.1])  # notes, and labels of classes not in the legend


def _present(classes: Sequence[str], colors: Sequence[Sequence[int]], ids) -> List[Tuple[str, Sequence[int]]]:
    return [(classes[i], colors[i]) for i in sorted({int(i) for i in ids}) if 0 <= i < len(classes)]


def draw_predictions(image_rgb: np.ndarray, predictions: dict, metadata: Metadata, opacity: float = 0.5,
                     confidence_threshold: float = 0.5, video: Optional[VideoVisualizer] = None,
                     no_segment_hint: str = "") -> ReadableVisualizer:
    """The readable overlay of one model output (panoptic, else semantic and/or instances):
    the finished visualizer (``.output.get_image()`` is the RGB image; ``.placed`` its texts).
    ``video``: a VideoVisualizer kept across the frames of one video, whose matching keeps each
    instance's colour. ``metadata`` should come from visible_metadata()."""
    vis = ReadableVisualizer(image_rgb, metadata, instance_mode=ColorMode.IMAGE)
    stuff, stuff_colors = metadata.get("stuff_classes", []), metadata.get("stuff_colors", [])
    things, thing_colors = metadata.get("thing_classes", []), metadata.get("thing_colors", [])
    drawn = False
    if "panoptic_seg" in predictions:
        seg, segments_info = predictions["panoptic_seg"]
        vis.draw_panoptic_seg(seg.to("cpu"), segments_info, alpha=opacity)
        legend = []
        for s in segments_info:
            names, colours = (things, thing_colors) if s.get("isthing") else (stuff, stuff_colors)
            legend += _present(names, colours, [s["category_id"]])
        vis.add_legend(list(dict.fromkeys((n, tuple(c)) for n, c in legend)))
        if not segments_info:
            vis.note("no segment" + (f": {no_segment_hint}" if no_segment_hint else ""))
        drawn = True
    else:
        if "sem_seg" in predictions:
            labels = predictions["sem_seg"].argmax(dim=0).to("cpu")
            vis.draw_sem_seg(labels, alpha=opacity)
            vis.add_legend(_present(stuff, stuff_colors, labels.unique().tolist()))
            drawn = True
        if "instances" in predictions:
            instances = predictions["instances"].to("cpu")
            instances = instances[instances.scores > confidence_threshold]
            colors = None
            if video is not None and len(instances):
                boxes = instances.pred_boxes.tensor.numpy()
                classes = instances.pred_classes.numpy()
                # detectron2's VideoVisualizer matching: same class, overlapping box -> same colour
                colors = video._assign_colors([_DetectedInstance(classes[i], boxes[i], None, None, 8)
                                               for i in range(len(instances))])
            vis.overlay_instances(
                masks=instances.pred_masks if instances.has("pred_masks") else None,
                boxes=None if instances.has("pred_masks") else instances.pred_boxes,
                labels=[f"{things[c]} {s:.0%}" for c, s in zip(instances.pred_classes.tolist(),
                                                               instances.scores.tolist())],
                assigned_colors=colors, alpha=opacity)
            vis.add_legend(_present(things, thing_colors, instances.pred_classes.tolist()))
            drawn = True
    if not drawn:
        raise ValueError(f"the model returned none of sem_seg / panoptic_seg / instances "
                         f"(keys: {sorted(predictions)})")
    vis.finish()
    return vis


def _palette(n: int) -> List[List[int]]:
    """n distinct-enough RGB colours (detectron2's colour map, cycled)."""
    base = colormap(rgb=True, maximum=255).astype(int).tolist()
    return [base[i % len(base)] for i in range(n)]


def _fit(values, n: int):
    return list(values) if values is not None and len(values) == n else None


def demo_metadata(dataset: Optional[str], num_classes: int) -> Metadata:
    """Metadata for drawing ``num_classes`` classes: from ``dataset``'s registered metadata, or
    the 19 Cityscapes classes without one; lists whose length differs from ``num_classes`` are
    replaced by generic names ("class 0", ...) and a fixed palette. A fresh object: the
    registered metadata is not modified (a dataset without class names counts as none)."""
    source = MetadataCatalog.get(dataset) if dataset else None
    if source is not None and (source.get("stuff_classes", None) or source.get("thing_classes", None)):
        stuff_classes, stuff_colors = source.get("stuff_classes", None), source.get("stuff_colors", None)
        thing_classes, thing_colors = source.get("thing_classes", None), source.get("thing_colors", None)
    else:  # no dataset, or one without class names: Cityscapes
        stuff_classes, stuff_colors = CITYSCAPES_CLASSES, CITYSCAPES_COLORS
        thing_classes, thing_colors = None, None
    names = _fit(stuff_classes, num_classes) or _fit(thing_classes, num_classes)
    if names is None:
        names = [f"class {i}" for i in range(num_classes)]
        colors = _palette(num_classes)
    else:
        colors = (_fit(stuff_colors, num_classes) if names == _fit(stuff_classes, num_classes) else None) \
            or _fit(thing_colors, num_classes) or _palette(num_classes)
    md = Metadata(name=f"rein_d2_demo:{dataset or 'cityscapes'}")
    md.set(stuff_classes=names, stuff_colors=[list(map(int, c)) for c in colors],
           thing_classes=_fit(thing_classes, num_classes) or list(names),
           thing_colors=[list(map(int, c)) for c in (_fit(thing_colors, num_classes) or colors)])
    if source is not None and source.get("thing_dataset_id_to_contiguous_id", None) is not None:
        md.set(thing_dataset_id_to_contiguous_id=dict(source.thing_dataset_id_to_contiguous_id))
    return md


class OverlayDrawer:
    """Model predictions (DefaultPredictor's output for one image) drawn over the image, with
    rein_d2.utils.visualizer's readable labels, legend and colours. ``video=True`` keeps each
    instance's colour from one call to the next (the frames of one video)."""

    def __init__(self, metadata: Metadata, opacity: float = 0.5, confidence_threshold: float = 0.5,
                 video: bool = False):
        self.metadata = visible_metadata(metadata)
        self.opacity = opacity
        self.confidence_threshold = confidence_threshold
        self.video = VideoVisualizer(self.metadata) if video else None

    def __call__(self, image_bgr: np.ndarray, predictions: dict) -> np.ndarray:
        """The overlay, BGR uint8, same size as ``image_bgr``."""
        vis = draw_predictions(image_bgr[:, :, ::-1], predictions, self.metadata, self.opacity,
                               self.confidence_threshold, video=self.video, no_segment_hint=NO_SEGMENT_HINT)
        return np.ascontiguousarray(vis.output.get_image()[:, :, ::-1])


NO_SEGMENT_HINT = ("none above MODEL.MASK2FORMER.TEST.OBJECT_MASK_THRESHOLD; lower it to see "
                   "less confident segments")
