import pytest

torch = pytest.importorskip("torch")

if not torch.cuda.is_available():  # every test in tests/gpu needs CUDA
    collect_ignore_glob = ["test_*.py"]
