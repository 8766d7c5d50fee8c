"""Progressive distillation of the MNIST U-Net: DDIM-64 -> 32 -> 16 -> 8 -> 4 steps (lesson 17).

The math is diffedu.distill (lesson 13): a student takes one DDIM step where its teacher takes two,
trained on the target x0 of eq. (3) there with the truncated-SNR weight of eq. (4). Here:

* the first teacher is the shipped eps-U-Net (``mnist_unet``), conditioned on the digit y (w = 1);
* every student is the same U-Net, warm-started from its teacher's weights (``--init``), but its
  output is read as v = alpha_t eps - sigma_t x0 (distill eq. 5):

      x0_hat = alpha_t x_t - sigma_t v_theta(x_t, t, y)

  so the first halving also teaches the network to say v instead of eps. (An eps-student would
  divide its error by alpha_T = 0.006 in the first step of a 4-step sampler.)
* label dropout as in training (p_uncond): the null label is given to teacher and student alike,
  so a student also samples unconditionally and with classifier-free guidance;
* each stage is a config (configs/mnist_distill_32.json ... _4.json) naming its teacher and the
  teacher's number of steps; the student of one stage is the teacher of the next.

    python -m diffedu.train configs/mnist_distill_32.json --init mnist_unet --ship
    python -m diffedu.train configs/mnist_distill_16.json --init mnist_distill_32 --ship   # ... down to 4

Sampling with a student is deterministic DDIM on distill.time_grid(T, n): ``student_sample``.
"""
import torch

from diffedu import distill
from diffedu._validate import generator as check_generator, one_of, positive_int
from diffedu.guidance import check_labels
from diffedu.schedules import NoiseSchedule

from .pipeline import load_unet
from .tasks import DDPMTask, null_class
from .unet import IMAGE_SHAPE


def with_labels(net, y, predict: str):
    """The network as f(x_t, t) with the labels y bound, and the attribute f.predict ("eps" or "v")
    that diffedu.distill reads."""
    def f(x_t, t):
        return net(x_t, t, y)
    f.predict = predict
    return f


def teacher_eps(net, y, schedule: NoiseSchedule, predict: str = "eps"):
    """eps_model(x_t, t) of a teacher with its labels bound: the network itself (predict="eps"), or a
    v-student turned into an eps-model by distill.as_eps_model (predict="v"). It always runs in fp32,
    also inside the trainer's bf16 autocast: the targets of eq. (3) are worth their precision."""
    f = with_labels(net, y, predict)
    f = f if predict == "eps" else distill.as_eps_model(f, schedule)

    def eps(x_t, t):
        with torch.autocast(x_t.device.type, enabled=False):
            return f(x_t.float(), t).float()
    return eps


@torch.no_grad()
def student_sample(net, schedule: NoiseSchedule, n: int, steps: int, labels=None, predict: str = "v",
                   generator=None, batch_size: int = 500) -> torch.Tensor:
    """n digits by deterministic DDIM on distill.time_grid(T, steps) (`steps` network calls each), in
    batches, clamped to [-1, 1]. predict="eps" samples the eps-U-Net on the same grid (the baseline)."""
    positive_int("n", n)
    one_of("predict", predict, ("eps", "v"))
    check_generator("generator", generator)
    y_all = torch.full((n,), null_class(net)) if labels is None else check_labels(labels, net.num_classes, batch=n)
    out = []
    for i in range(0, n, batch_size):
        y = y_all[i:i + batch_size]
        x_T = torch.randn(len(y), *IMAGE_SHAPE, generator=generator)
        out.append(distill.sample(teacher_eps(net, y, schedule, predict), schedule, x_T, steps))
    return torch.cat(out).clamp(-1, 1)


class DistillTask(DDPMTask):
    """One halving on MNIST. Config: teacher (a shipped name), teacher_steps (N, even), model (the
    teacher's), p_uncond, batch_size, eval_fd_n. The student takes N / 2 steps."""

    architecture = DDPMTask.architecture + ", read as v (progressive distillation student)"
    init_tasks = ("diffedu.images.tasks:DDPMTask",)        # the first student starts from the eps-U-Net

    def __init__(self, config: dict, device):
        if config.get("predict") != "v":
            raise ValueError(f"a distilled student predicts v (diffedu.distill eq. 5): set \"predict\": \"v\" in the "
                             f"config, got {config.get('predict')!r}.")
        super().__init__(config, device)
        self.teacher_steps = config["teacher_steps"]
        self.student_steps = distill.student_steps(self.teacher_steps)    # raises unless N is even and >= 2
        self.teacher, schedule, card = load_unet(config["teacher"], {"model": config["model"]}, self.device)
        if schedule.name != self.schedule.name or schedule.T != self.T:
            raise ValueError(f"the teacher {config['teacher']!r} uses the {schedule.name} schedule with T="
                             f"{schedule.T}; this config says {self.schedule.name} with T={self.T}.")
        self.teacher_predict = card["config"].get("predict", "eps")
        self.data_info = {**self.data_info, "teacher": config["teacher"], "teacher_weights_sha256": card["weights_sha256"]}

    def loss(self, model, batch):
        """distill.loss (eq. 4) with the batch's labels, a fraction p_uncond of them the null label."""
        x0, y = batch
        drop = torch.rand(len(y), generator=self._g).to(y.device) < self.p_uncond
        y = torch.where(drop, torch.full_like(y, null_class(model)), y)
        teacher = teacher_eps(self.teacher, y, self.schedule, self.teacher_predict)
        return distill.loss(with_labels(model, y, "v"), teacher, x0, self.schedule, self.teacher_steps, self._g)

    def batches(self, generator, rank: int = 0, world_size: int = 1):
        self._g = generator                                  # the loss draws t, eps and the dropout from it too
        return super().batches(generator, rank, world_size)

    def on_checkpoint(self, ema_model, step: int, out_dir) -> None:
        """No sample grid: DDPMTask's would read the v-student as an eps-network."""

    @torch.no_grad()
    def evaluate(self, ema_model) -> dict:
        """With eval_fd_n = n: the FD of n conditional samples (labels 0..9 in turn) of the student with
        N / 2 steps and, from the same noise, of the eps-U-Net `mnist_unet` with plain DDIM on the same
        grid; both against the same n random test digits."""
        from diffedu import data, metrics
        from .classifier import load
        n = self.config.get("eval_fd_n", 1000)
        if not n:
            return {}
        x_test = data.mnist("test").tensors[0]
        g = torch.Generator().manual_seed(1234)
        real = x_test[torch.randperm(len(x_test), generator=g)[:n]]
        judge, labels, k = load("mnist_classifier"), torch.arange(n) % 10, self.student_steps
        base, _, _ = load_unet("mnist_unet")
        fd = lambda net, p: metrics.frechet_distance(
            student_sample(net, self.schedule, n, k, labels, p, torch.Generator().manual_seed(0)), real, judge)
        return {f"fd_student_{k}steps_conditional_n{n}": round(fd(ema_model, "v"), 3),
                f"fd_ddim{k}_mnist_unet_conditional_n{n}": round(fd(base, "eps"), 3)}
