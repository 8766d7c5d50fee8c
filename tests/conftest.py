import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Tiny 2D tensors: one thread is fastest (and threads fight on a busy machine).

    Use it in a test module with ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
