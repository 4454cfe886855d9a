"""Training data that resumes exactly, with any number of loader workers.

detectron2's loader draws each sample's augmentations from the global numpy / Python RNG of
the worker process that maps it. A resumed run starts its workers anew, so those streams, and
with them every crop, flip and colour jitter, differ from the uninterrupted run's. Here each
sample carries its position in the sampler's global index stream, and its augmentations are
drawn from RNGs seeded by (seed, position): the same sample at the same place in the stream
gets the same draws, whichever worker maps it and whether the run was resumed.
"""
import contextlib
import random

import numpy as np
import torch
from detectron2.data.common import DatasetFromList
from detectron2.data.samplers import TrainingSampler
from torch.utils.data import Dataset

__all__ = ["ResumableTrainingSampler", "PositionedDataset", "SeededMapper", "seeded_rngs"]

POSITION_KEY = "_rein_stream_position"


class ResumableTrainingSampler(TrainingSampler):
    """detectron2's seeded infinite sampler that can skip the indices already consumed, so a
    resumed run sees the same images in the same order as an uninterrupted one.

    It yields ``position * size + index``: the dataset index tagged with its position in the
    global stream (before sharding across processes), which :class:`PositionedDataset` decodes.
    """

    def __init__(self, size: int, shuffle: bool = True, seed=None):
        super().__init__(size, shuffle, seed)
        self.skip = 0  # indices of the global stream to skip (set before iteration starts)

    @property
    def seed(self) -> int:
        return self._seed  # drawn and shared across processes by detectron2 when not given

    def _infinite_indices(self):
        for position, index in enumerate(super()._infinite_indices()):
            if position >= self.skip:
                yield position * self._size + int(index)


class PositionedDataset(Dataset):
    """Dataset dicts indexed as :class:`ResumableTrainingSampler` yields: item ``k`` is dict
    ``k % len`` with its stream position ``k // len`` under a private key. (detectron2's
    MapDataset retries a failed sample with a plain index below ``len``: position 0.)"""

    def __init__(self, dicts):
        self._dicts = DatasetFromList(dicts, copy=False)  # serialised: no copy-on-read growth

    def __len__(self):
        return len(self._dicts)

    def __getitem__(self, k):
        position, index = divmod(int(k), len(self._dicts))
        return {**self._dicts[index], POSITION_KEY: position}


@contextlib.contextmanager
def seeded_rngs(*key: int):
    """numpy's, Python's and torch's global RNGs seeded from ``key`` inside the block, and given
    back as they were after it (whoever else draws from them is not disturbed)."""
    state = np.random.get_state(), random.getstate(), torch.get_rng_state()
    words = np.random.SeedSequence([int(k) for k in key]).generate_state(2)  # two uint32
    np.random.seed(words)
    random.seed(int(words[0]) << 32 | int(words[1]))
    torch.manual_seed(int(words[0]) << 32 | int(words[1]))
    try:
        yield
    finally:
        np.random.set_state(state[0])
        random.setstate(state[1])
        torch.set_rng_state(state[2])


class SeededMapper:
    """``mapper`` run with the RNGs seeded by (seed, the sample's stream position)."""

    def __init__(self, mapper, seed: int):
        self.mapper = mapper
        self.seed = int(seed)

    def __call__(self, dataset_dict):
        position = dataset_dict.pop(POSITION_KEY, None)
        if position is None:  # not from a PositionedDataset
            return self.mapper(dataset_dict)
        with seeded_rngs(self.seed, position):
            return self.mapper(dataset_dict)
