"""Progress of an evaluation: one target's images done out of its total, with the rate and the
time left, so that a long evaluation (minutes per image on a slow CPU) is never silent."""
import datetime
import logging
import time

from detectron2.evaluation import DatasetEvaluator

__all__ = ["ProgressLog"]

logger = logging.getLogger(__name__)


class ProgressLog(DatasetEvaluator):
    """A DatasetEvaluator that scores nothing: it logs "<name>: i/N images, s/image, time
    left" at the first image, then every ``every`` seconds, and at the last. detectron2's own
    progress line stays silent through its warm-up (10 images when they are fast)."""

    def __init__(self, name: str, total: int, every: float = 10.0):
        self.name, self.total, self.every = name, total, every
        self.reset()

    def reset(self):
        self.done, self.start, self.last = 0, time.perf_counter(), None

    def process(self, inputs, outputs):
        self.done += len(inputs)
        now = time.perf_counter()
        if self.last is not None and now - self.last < self.every and self.done < self.total:
            return
        self.last = now
        per_image = (now - self.start) / self.done
        left = datetime.timedelta(seconds=round(per_image * max(self.total - self.done, 0)))
        logger.info("%s: %d/%d images, %.2f s/image, %s left", self.name, self.done, self.total,
                    per_image, left)

    def evaluate(self):
        return None
