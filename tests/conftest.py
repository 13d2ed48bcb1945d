import os

import pytest

# Offline by default: no hub access in tests.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def f64():
    import torch

    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield torch.float64
    torch.set_default_dtype(old)


@pytest.fixture(scope="session")
def train_data_root(tmp_path_factory):
    """Prepared token shards for ``_train_helpers.tiny_config`` (read only; shared by the train tests)."""
    from _train_helpers import prepare_tiny_data

    root = tmp_path_factory.mktemp("train-data")
    prepare_tiny_data(root)
    return root
