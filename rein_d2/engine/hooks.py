"""Training hooks of ReinTrainer: stop on a loss spike before it is checkpointed, and print
progress early instead of only every 20 iterations."""
import math
import statistics
from collections import deque

from detectron2.engine import HookBase, hooks

from ..config import LOSS_SPIKE_MIN_HISTORY

__all__ = ["LossSpikeGuard", "EarlyPeriodicWriter", "TrainingDiverged", "divergence_message"]


class TrainingDiverged(FloatingPointError):
    """The loss became non-finite or spiked; the message names the checkpoint to resume from."""


def divergence_message(checkpointer) -> str:
    if checkpointer.has_checkpoint():
        return (f"the last checkpoint before it, {checkpointer.get_checkpoint_file()}, is kept: "
                "continue from it with --resume (it is OUTPUT_DIR/last_checkpoint); if it "
                "diverges again, start anew with a lower SOLVER.BASE_LR or SOLVER.CLIP_GRADIENTS")
    return ("no checkpoint was saved before it: start anew with a lower SOLVER.BASE_LR or "
            "SOLVER.CLIP_GRADIENTS")


class LossSpikeGuard(HookBase):
    """Stop when total_loss exceeds ``factor`` x the median of the last ``window`` iterations.

    Runs after the optimiser step and before the checkpointer hook, so the weights the spike
    moved are never saved: the last checkpoint is the last good state. Non-finite losses are
    stopped by detectron2 before the optimiser step."""

    def __init__(self, factor: float, window: int, min_history: int = LOSS_SPIKE_MIN_HISTORY):
        self.factor = factor
        self.history = deque(maxlen=window)
        self.min_history = min_history

    def after_step(self):
        storage = self.trainer.storage
        if "total_loss" not in storage.histories():  # not the main process, or no loss yet
            return
        loss, it = storage.history("total_loss").values()[-1]
        if it != self.trainer.iter:
            return
        if len(self.history) >= self.min_history and math.isfinite(loss):
            median = statistics.median(self.history)
            if loss > self.factor * median:
                raise TrainingDiverged(
                    f"loss spike at iteration={it}: total_loss {loss:.4g} is {loss / median:.0f}x "
                    f"the median {median:.4g} of the previous {len(self.history)} iterations "
                    f"(SOLVER.LOSS_SPIKE_FACTOR {self.factor:g}); training stopped, "
                    + divergence_message(self.trainer.checkpointer))
        self.history.append(loss)


class EarlyPeriodicWriter(hooks.PeriodicWriter):
    """detectron2's PeriodicWriter that also writes after the 3rd, 5th and 10th iteration of a
    run (or of a resumed run), so a slow one shows its losses, speed and ETA long before
    iteration 20. (Not earlier: detectron2's iteration timer skips 3 warm-up iterations.)"""

    EARLY = (2, 4, 9)

    def after_step(self):
        super().after_step()
        done = self.trainer.iter - self.trainer.start_iter
        if done in self.EARLY and (self.trainer.iter + 1) % self._period:
            for writer in self._writers:
                writer.write()
