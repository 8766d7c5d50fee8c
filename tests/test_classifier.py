"""The MNIST classifiers (diffedu.images): shapes, clear errors, the training tasks, and the shipped checkpoints."""
import pytest
import torch

from diffedu import data
from diffedu.images import classifier as C
from diffedu.images import tasks
from diffedu.schedules import NoiseSchedule


def test_shapes_and_features():
    torch.manual_seed(0)
    clean, noisy = C.MnistClassifier(), C.NoisyMnistClassifier()
    x = torch.randn(5, 1, 28, 28)
    assert clean(x).shape == (5, 10) and clean.features(x).shape == (5, 64)
    # the logits are a linear function of the features: the head is the last layer
    clean.eval()
    assert torch.allclose(clean(x), clean.head(clean.features(x)))
    assert noisy(x, torch.tensor([0, 1, 10, 500, 1000])).shape == (5, 10)
    assert noisy(x, 7).shape == (5, 10)  # one int for the whole batch


@pytest.mark.parametrize("shape", [(2, 1, 32, 32), (2, 28, 28), (2, 3, 28, 28), (2, 2)])
def test_input_size_mismatch_is_a_clear_error(shape):
    with pytest.raises(ValueError, match="input size does not match"):
        C.MnistClassifier()(torch.randn(shape))
    with pytest.raises(ValueError, match="input size does not match"):
        C.NoisyMnistClassifier()(torch.randn(shape), torch.zeros(shape[0], dtype=torch.long))


def test_bad_time_steps_and_kinds():
    net, x = C.NoisyMnistClassifier(T=1000), torch.randn(2, 1, 28, 28)
    with pytest.raises(ValueError, match="time steps must be in 0..1000"):
        net(x, torch.tensor([3, 1001]))
    with pytest.raises(TypeError, match="integer time steps"):
        net(x, torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match="shape \\(2,\\)"):
        net(x, torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="model kind"):
        C.build({"kind": "ResNet50"})
    with pytest.raises(ValueError, match="'linear' or 'cosine'"):
        NoiseSchedule.from_name("sigmoid")


def test_random_shift_is_an_exact_translation():
    g = torch.Generator().manual_seed(3)
    x = -torch.ones(4, 1, 28, 28)
    x[:, :, 5:23, 5:23] = torch.rand(4, 1, 18, 18)  # content away from the border, background -1
    y = tasks.random_shift(x, 2, g)
    dx, dy = torch.randint(0, 5, (2, 4), generator=torch.Generator().manual_seed(3)).tolist()
    for i in range(4):  # crop at (dy, dx) of the padded image = roll by (2 - dy, 2 - dx)
        assert torch.equal(y[i], torch.roll(x[i], shifts=(2 - dy[i], 2 - dx[i]), dims=(1, 2)))
    assert torch.equal(tasks.random_shift(x, 0, g), x)


def test_noisy_task_batches_follow_q_sample():
    cfg = {"model": {"kind": "NoisyMnistClassifier", "ch": 8, "T": 100}, "schedule": "linear", "T": 100,
           "batch_size": 6, "augment_shift": 0}
    task = tasks.NoisyClassifierTask(cfg, "cpu")
    x_t, t, y = next(task.batches(torch.Generator().manual_seed(1)))
    # redo the draws by hand with the same generator: indices, time steps, then the noise
    g = torch.Generator().manual_seed(1)
    idx = torch.randint(0, 60000, (6,), generator=g)
    t_ref = torch.randint(0, 101, (6,), generator=g)
    x_train, y_train = data.mnist("train").tensors
    x0, y_ref = x_train[idx], y_train[idx]
    ab = NoiseSchedule.linear(100).alpha_bar[t_ref].float().view(-1, 1, 1, 1)
    eps = torch.randn(x0.shape, generator=g)
    assert torch.equal(t, t_ref) and torch.equal(y, y_ref)
    assert torch.allclose(x_t, ab.sqrt() * x0 + (1 - ab).sqrt() * eps, atol=1e-6)
    assert task.loss(task.model, (x_t, t, y)).ndim == 0
    with pytest.raises(ValueError, match="differ"):
        tasks.NoisyClassifierTask({**cfg, "T": 50}, "cpu")


@pytest.fixture(scope="module")
def test_digits():
    x, y = data.mnist("test").tensors
    return x[:1000], y[:1000]


def test_shipped_clean_classifier(test_digits):
    model = C.load("mnist_classifier")
    x, y = test_digits
    assert model.card["metrics"]["test_accuracy"] >= 0.99
    acc = (C.predict(model, x) == y).float().mean().item()
    assert acc >= 0.98, acc  # the first 1000 test digits; the card's number is on all 10000
    assert model.features(x[:3]).shape == (3, 64)


def test_shipped_noisy_classifier(test_digits):
    model = C.load("mnist_noisy_classifier")
    x, y = test_digits
    assert model.card["config"]["schedule"] == "linear" and model.card["config"]["T"] == 1000
    acc = C.accuracy_vs_t(model, x, y, NoiseSchedule.linear(1000), [0, 300, 1000],
                          generator=torch.Generator().manual_seed(0))
    assert acc[0] >= 0.97 and acc[300] >= 0.9
    assert acc[1000] <= 0.2  # x_1000 is almost pure noise: near chance (0.1)
    assert acc[0] > acc[300] > acc[1000]


def test_missing_checkpoint_names_the_command(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFEDU_ASSETS", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="configs/mnist_noisy_classifier.json"):
        C.load("mnist_noisy_classifier")
