"""tests/gpu: checks that need CUDA (skipped elsewhere).

float32 in these tests means IEEE float32 dots: TRITON_F32_DEFAULT=ieee is set before any Triton
kernel compiles, because Triton's default TF32 dots alone carry ~1e-3 relative error. Training and
evaluation keep Triton's default (they run in bf16 anyway).
"""

import os

os.environ.setdefault("TRITON_F32_DEFAULT", "ieee")

import pytest  # noqa: E402

torch = pytest.importorskip("torch")

if not torch.cuda.is_available():  # every test in tests/gpu needs CUDA
    collect_ignore_glob = ["test_*.py"]


def pytest_collection_modifyitems(config, items):
    """A file of tests/gpu named on the command line is collected anyway: skip its tests without CUDA."""
    if torch.cuda.is_available():
        return
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.skip(reason="needs CUDA"))
