"""The resumable samplers: skipping k indices gives the tail of the uninterrupted stream, each
index tagged with its stream position, for every DATALOADER.SAMPLER_TRAIN that rein_d2 takes."""
import itertools

import numpy as np
import pytest
import torch

from rein_d2.data.samplers import (PositionedDataset, ResumableRandomSubsetSampler,
                                   ResumableRepeatFactorSampler, ResumableTrainingSampler,
                                   SeededMapper, seeded_rngs)


@pytest.mark.parametrize("make", [
    lambda: ResumableTrainingSampler(7, seed=3),
    lambda: ResumableRepeatFactorSampler(torch.tensor([1.0, 2.5, 1.0, 1.7, 1.0]), seed=3),
    lambda: ResumableRandomSubsetSampler(9, 0.5, seed=3),
], ids=["training", "repeat factor", "random subset"])
def test_a_skipped_stream_is_the_tail_of_the_full_one(make):
    full = list(itertools.islice(iter(make()), 40))
    resumed_sampler = make()
    resumed_sampler.skip = 13
    resumed = list(itertools.islice(iter(resumed_sampler), 27))
    assert resumed == full[13:]
    size = resumed_sampler.dataset_size
    assert [k // size for k in full] == list(range(40))  # each tagged with its position
    assert all(0 <= k % size < size for k in full)


def test_positioned_samples_get_the_same_draws_wherever_they_are_mapped():
    dataset = PositionedDataset([{"file_name": f"{i}.png"} for i in range(3)])
    draw = SeededMapper(lambda d: (d["file_name"], float(torch.rand(1)), int(np.random.randint(1000))), seed=5)
    first = [draw(dataset[k]) for k in (4, 7, 2)]  # (position 1, 1), (2, 1), (0, 2)
    torch.manual_seed(123)  # another worker's state: no effect
    again = [draw(dataset[k]) for k in (7, 2, 4)]
    assert [first[1], first[2], first[0]] == again
    assert first[0][0] == "1.png" and first[0][1:] != first[1][1:]
    before = torch.get_rng_state()
    with seeded_rngs(1, 2):
        torch.rand(3)
    assert torch.equal(torch.get_rng_state(), before)  # the global streams are given back
