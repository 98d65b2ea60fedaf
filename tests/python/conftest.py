import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU and torch (the GPU test host)")


@pytest.fixture
def rng(request):
    """Fresh random inputs every run (a seed per test is printed on failure for reproduction)."""
    import numpy as np
    seed = int.from_bytes(os.urandom(4), "little") if "FLASHATTN_TEST_SEED" not in os.environ \
        else int(os.environ["FLASHATTN_TEST_SEED"])
    request.node.user_properties.append(("seed", seed))
    sys.stderr.write("[seed %d] " % seed)
    return np.random.default_rng(seed)
