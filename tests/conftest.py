import os

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(REPO), "shared")
FIXTURES = os.path.join(SHARED, "fixtures", "reference")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def fixtures_dir():
    """The reference fixtures in ../shared (skipped, saying so, where that folder is absent)."""
    if not os.path.isdir(FIXTURES):
        pytest.skip(f"reference fixtures not found at {FIXTURES} (../shared is not beside the repo)")
    return FIXTURES


def config_path(name):
    return os.path.join(REPO, "configs", name)
