"""Progressive distillation of the MNIST U-Net (diffedu.images.distill): the student's target, its
sampler and the configs of the four halvings, against diffedu.distill and exact answers."""
import json
from pathlib import Path

import pytest
import torch

from diffedu import distill
from diffedu.images import distill as mnist_distill
from diffedu.images.unet import UNet
from diffedu.schedules import NoiseSchedule

ROOT = Path(__file__).resolve().parents[1]
STAGES = [(64, "mnist_unet", 32), (32, "mnist_distill_32", 16), (16, "mnist_distill_16", 8), (8, "mnist_distill_8", 4)]


def tiny():
    torch.manual_seed(0)
    return UNet(ch=8, ch_mult=(1, 1, 2), attn_res=(), dropout=0.0, num_classes=10, T=1000).eval()


@pytest.mark.parametrize("teacher_steps, teacher, student", STAGES)
def test_each_halving_config_names_its_teacher_and_half_its_steps(teacher_steps, teacher, student):
    cfg = json.loads((ROOT / f"configs/mnist_distill_{student}.json").read_text())
    base = json.loads((ROOT / "configs/mnist_unet.json").read_text())
    assert cfg["teacher"] == teacher and cfg["teacher_steps"] == teacher_steps == 2 * student
    assert cfg["predict"] == "v" and cfg["model"] == base["model"] and cfg["schedule"] == base["schedule"]
    assert f"--init {teacher}" in cfg["notes"]


def test_a_v_teacher_is_turned_back_into_eps_exactly():
    """teacher_eps of a v-network: eps = (x_t - alpha x0_hat) / sigma with x0_hat = alpha x_t - sigma v."""
    net, sched = tiny(), NoiseSchedule.linear(1000)
    x, t, y = torch.randn(3, 1, 28, 28), torch.tensor([10, 500, 990]), torch.tensor([1, 2, 10])
    ab = sched.alpha_bar[t].view(-1, 1, 1, 1).float()
    v = net(x, t, y)
    x0 = ab.sqrt() * x - (1 - ab).sqrt() * v
    want = (x - ab.sqrt() * x0) / (1 - ab).sqrt()
    assert torch.allclose(mnist_distill.teacher_eps(net, y, sched, "v")(x, t), want, atol=1e-5)
    assert torch.equal(mnist_distill.teacher_eps(net, y, sched, "eps")(x, t), v)


def test_student_sample_is_ddim_on_the_distillation_grid():
    net, sched = tiny(), NoiseSchedule.linear(1000)
    labels = torch.tensor([3, 7, 1])
    got = mnist_distill.student_sample(net, sched, 3, 4, labels, "eps", torch.Generator().manual_seed(5))
    x_T = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(5))
    want = distill.sample(lambda x, t: net(x, t, labels), sched, x_T, 4).clamp(-1, 1)
    assert torch.allclose(got, want, atol=1e-6)
    assert mnist_distill.student_sample(net, sched, 2, 2, None, "v", torch.Generator()).shape == (2, 1, 28, 28)
    with pytest.raises(ValueError, match="class labels must be in 0..9"):
        mnist_distill.student_sample(net, sched, 2, 2, [1, 12])
    with pytest.raises(ValueError, match="predict"):
        mnist_distill.student_sample(net, sched, 2, 2, None, "x0")


def test_the_task_refuses_an_eps_student_and_an_odd_teacher(tmp_path):
    from diffedu.train import Trainer, load_config
    cfg = load_config(ROOT / "configs/mnist_distill_32.json")
    with pytest.raises(ValueError, match="predicts v"):
        Trainer({**cfg, "predict": "eps"}, tmp_path / "a")
    with pytest.raises(ValueError, match="half of its teacher's steps"):
        Trainer({**cfg, "teacher_steps": 7}, tmp_path / "b")


def test_the_task_loss_is_distill_loss_with_the_labels_bound(tmp_path):
    """One training loss of the first halving equals diffedu.distill.loss on the same batch and generator."""
    from diffedu.train import Trainer, load_config
    cfg = load_config(ROOT / "configs/mnist_distill_32.json")
    trainer = Trainer({**cfg, "batch_size": 4, "p_uncond": 0.0}, tmp_path / "a")
    task = trainer.task
    g = torch.Generator().manual_seed(3)
    x0, y = next(task.batches(g))
    state = g.get_state()
    ours = task.loss(trainer.model, (x0, y))
    g.set_state(state)
    torch.rand(len(y), generator=g)                                # the label-dropout draw
    student = mnist_distill.with_labels(trainer.model, y, "v")
    want = distill.loss(student, mnist_distill.teacher_eps(task.teacher, y, task.schedule), x0, task.schedule, 64, g)
    assert torch.allclose(ours, want)
