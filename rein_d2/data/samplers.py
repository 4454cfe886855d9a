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
from detectron2.data.samplers import (RandomSubsetTrainingSampler, RepeatFactorTrainingSampler,
                                      TrainingSampler)
from torch.utils.data import Dataset

__all__ = ["ResumableSampler", "ResumableTrainingSampler", "ResumableRepeatFactorSampler",
           "ResumableRandomSubsetSampler", "build_resumable_sampler", "PositionedDataset", "SeededMapper", "seeded_rngs"]

POSITION_KEY = "_rein_stream_position"


class ResumableSampler:
    """Mixin for detectron2's infinite samplers (whose ``__iter__`` shards
    ``_infinite_indices`` across processes): skip the first ``skip`` indices of the global
    stream, and yield each index as ``position * dataset_size + index``, tagging it with its
    position in that stream (before sharding), which :class:`PositionedDataset` decodes."""

    skip = 0  # indices of the global stream to skip (set before iteration starts)
    dataset_size = None

    @property
    def seed(self) -> int:
        return self._seed  # drawn and shared across processes by detectron2 when not given

    def _infinite_indices(self):
        for position, index in enumerate(super()._infinite_indices()):
            if position >= self.skip:
                yield position * self.dataset_size + int(index)


class ResumableTrainingSampler(ResumableSampler, TrainingSampler):
    """detectron2's TrainingSampler, resumable (see :class:`ResumableSampler`)."""

    def __init__(self, size: int, shuffle: bool = True, seed=None):
        super().__init__(size, shuffle, seed)
        self.dataset_size = size


class ResumableRepeatFactorSampler(ResumableSampler, RepeatFactorTrainingSampler):
    """detectron2's RepeatFactorTrainingSampler (LVIS-style repeat factor sampling), resumable."""

    def __init__(self, repeat_factors, *, shuffle: bool = True, seed=None):
        super().__init__(repeat_factors, shuffle=shuffle, seed=seed)
        self.dataset_size = len(repeat_factors)


class ResumableRandomSubsetSampler(ResumableSampler, RandomSubsetTrainingSampler):
    """detectron2's RandomSubsetTrainingSampler, resumable."""

    def __init__(self, size: int, subset_ratio: float, shuffle: bool = True, seed=None):
        super().__init__(size, subset_ratio, shuffle=shuffle, seed_shuffle=seed, seed_subset=seed)
        self.dataset_size = size


def build_resumable_sampler(cfg, dataset_dicts):
    """The sampler DATALOADER.SAMPLER_TRAIN names, in its resumable form, seeded with SEED."""
    name, seed = cfg.DATALOADER.SAMPLER_TRAIN, (cfg.SEED if cfg.SEED >= 0 else None)
    if name == "TrainingSampler":
        return ResumableTrainingSampler(len(dataset_dicts), seed=seed)
    if name == "RepeatFactorTrainingSampler":
        if not all("annotations" in d for d in dataset_dicts):
            raise ValueError("DATALOADER.SAMPLER_TRAIN RepeatFactorTrainingSampler repeats images "
                             "by the frequency of their instance categories, but the training "
                             "dicts have no 'annotations' (a semantic dataset): use TrainingSampler")
        factors = RepeatFactorTrainingSampler.repeat_factors_from_category_frequency(
            dataset_dicts, cfg.DATALOADER.REPEAT_THRESHOLD, sqrt=cfg.DATALOADER.REPEAT_SQRT)
        return ResumableRepeatFactorSampler(factors, seed=seed)
    if name == "RandomSubsetTrainingSampler":
        return ResumableRandomSubsetSampler(len(dataset_dicts), cfg.DATALOADER.RANDOM_SUBSET_RATIO, seed=seed)
    raise ValueError(f"DATALOADER.SAMPLER_TRAIN {name!r} is not supported; choose TrainingSampler, "
                     f"RepeatFactorTrainingSampler or RandomSubsetTrainingSampler")


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
