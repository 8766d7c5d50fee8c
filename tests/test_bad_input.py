"""Bad input to the images pipeline, the 2D tools and the shared math: one clear error where it enters.

Each test names one kind of bad value and sends it to every public function that takes it; each
call must raise one ValueError or TypeError whose message names the argument and says what is
allowed, before any network call or sampling step runs.
"""
import pytest
import torch

from diffedu import forward, guidance, langevin, metrics, nets, samplers, sde, toy
from diffedu.images import classifier, pipeline, tasks, unet
from diffedu.schedules import NoiseSchedule

pytestmark = pytest.mark.usefixtures("one_thread")

S = NoiseSchedule.linear(10)
NAN, INF = float("nan"), float("inf")


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def tiny_unet(**kw):
    torch.manual_seed(0)
    return unet.UNet(**{"ch": 8, "ch_mult": (1, 1, 1), "heads": 2, "dropout": 0.0, "T": 10, **kw}).eval()


class Counting:
    """An eps_model that counts its calls: a check must fire before the first one."""

    def __init__(self):
        self.calls = 0

    def __call__(self, x_t, t, y=None):
        self.calls += 1
        return torch.zeros_like(x_t)


def raises(cls, pattern, fn, *args, **kw):
    with pytest.raises(cls, match=pattern):
        fn(*args, **kw)


# ----------------------------------------------------------------------------- 1. guidance scale w
def test_negative_or_nan_guidance_weight_is_refused_everywhere_with_one_message():
    m = tiny_unet()
    for w in (-1.0, NAN, INF):
        with pytest.raises((TypeError, ValueError)) as want:
            guidance.check_scale(w, "w")
        for call in (lambda: guidance.cfg_model(m, 3, w),
                     lambda: pipeline.eps_model(m, 3, w),
                     lambda: pipeline.eps_model(m, None, w),
                     lambda: pipeline.sample(m, S, 2, steps=5, w=w, progress=False),
                     lambda: pipeline.sample(m, S, 2, steps=5, labels=3, w=w, progress=False)):
            with pytest.raises(want.type) as got:
                call()
            assert str(got.value) == str(want.value)
    pipeline.eps_model(m, None, 0.0)  # valid weights still pass
    pipeline.eps_model(m, 3, 4.0)


# ----------------------------------------------------------------------------- 2. clip_x0
def test_clip_x0_must_be_none_or_a_positive_finite_number():
    m, eps = tiny_unet(), Counting()
    x, e = torch.zeros(2, 2), torch.zeros(2, 2)
    msg = r"clip_x0 must be a positive finite number, got .* use None for no clipping"
    for bad in (0, 0.0, -1.0, NAN, INF):
        raises(ValueError, msg, pipeline.sample, m, S, 2, steps=5, clip_x0=bad, progress=False)
        raises(ValueError, msg, pipeline.sample, m, S, 2, "ddpm", clip_x0=bad, progress=False)
        raises(ValueError, msg, samplers.ddpm_sample, eps, S, (2, 2), clip_x0=bad, progress=False)
        raises(ValueError, msg, samplers.ddim_sample, eps, S, (2, 2), steps=5, clip_x0=bad, progress=False)
        raises(ValueError, msg, samplers.ddpm_step, x, 5, e, S, clip_x0=bad)
        raises(ValueError, msg, samplers.ddim_step, x, 5, e, S, t_prev=4, clip_x0=bad)
        raises(ValueError, msg, guidance.guided_ddpm_step, x, 5, e, S, grad=e, scale=1.0, clip_x0=bad)
        raises(ValueError, msg, guidance.guided_ddpm_sample, eps, None, 0, 0.0, S, (2, 2), clip_x0=bad,
               progress=False)
    raises(TypeError, "clip_x0 must be a positive number, got str", samplers.ddpm_step, x, 5, e, S, clip_x0="1")
    assert eps.calls == 0
    assert samplers.ddpm_step(x, 5, e, S, clip_x0=None)[0].shape == (2, 2)
    assert samplers.ddim_step(x, 5, e, S, t_prev=4, clip_x0=1)[0].shape == (2, 2)


# ----------------------------------------------------------------------------- 3. DDIM eta
def test_eta_must_be_a_finite_number_at_least_0_before_anything_runs():
    m, eps = tiny_unet(), Counting()
    for bad, cls in ((NAN, TypeError), (INF, TypeError), (-INF, TypeError), (-0.5, ValueError)):
        msg = "eta must be >= 0" if cls is ValueError else "eta must be a finite number >= 0"
        raises(cls, msg, samplers.ddim_sample, eps, S, (2, 2), steps=5, eta=bad, progress=False)
        raises(cls, msg, pipeline.sample, m, S, 2, "ddpm", eta=bad, progress=False)  # ignored by DDPM today
        raises(cls, msg, pipeline.sample, m, S, 2, "ddim", steps=5, eta=bad, progress=False)
    assert eps.calls == 0


# ----------------------------------------------------------------------------- 4. batch_size
def test_batch_size_must_be_a_positive_int_everywhere_it_batches():
    m, judge = tiny_unet(), classifier.MnistClassifier().eval()
    x = torch.zeros(3, 1, 28, 28)
    for bad in (0, -1, 1.5, True, "8"):
        msg = "batch_size must be a positive int, got"
        raises(ValueError, msg, pipeline.sample, m, S, 2, steps=5, batch_size=bad, progress=False)
        raises(ValueError, msg, classifier.predict, judge, x, batch_size=bad)
        raises(ValueError, msg, metrics.mnist_features, x, judge, batch_size=bad)
        raises(ValueError, msg, guidance.sample_per_class, lambda y: Counting(), S, 1, classes=(0, 1), steps=5,
               batch_size=bad, shape=(2,), progress=False)
        raises(ValueError, msg, nets.train_ddpm_2d, nets.ScoreMLP(hidden=8, depth=1), None, S, steps=1,
               batch_size=bad, progress=False)


# ----------------------------------------------------------------------------- 5. generator
def test_a_seed_in_place_of_a_generator_is_refused():
    mix, m = toy.lesson_mixture(), tiny_unet()
    x2, x_img = torch.zeros(4, 2), torch.zeros(2, 1, 28, 28)
    net_t, net_s = nets.ScoreMLP(hidden=8, depth=1), nets.ScoreMLP(hidden=8, depth=1, cond="sigma")
    eps, score = Counting(), lambda x, *a: torch.zeros_like(x)
    calls = {
        "pipeline.sample": lambda g: pipeline.sample(m, S, 2, steps=5, generator=g, progress=False),
        "ddpm_sample": lambda g: samplers.ddpm_sample(eps, S, (2, 2), generator=g, progress=False),
        "ddim_sample": lambda g: samplers.ddim_sample(eps, S, (2, 2), steps=5, eta=1.0, generator=g,
                                                      progress=False),
        "ddpm_step": lambda g: samplers.ddpm_step(x2, 5, x2, S, generator=g),
        "ddim_step": lambda g: samplers.ddim_step(x2, 5, x2, S, t_prev=4, eta=1.0, generator=g),
        "start_noise": lambda g: samplers.start_noise((2, 2), g),
        "noise_like": lambda g: forward.noise_like(x2, g),
        "q_sample": lambda g: forward.q_sample(x2, 3, S, generator=g),
        "q_step": lambda g: forward.q_step(x2, 3, S, generator=g),
        "reverse_sde_sample": lambda g: sde.reverse_sde_sample(eps, S, (2, 2), steps=3, generator=g, progress=False),
        "probability_flow_sample": lambda g: sde.probability_flow_sample(eps, S, (2, 2), steps=3, generator=g,
                                                                          x_T=x2, progress=False),
        "langevin": lambda g: langevin.langevin(score, x2, 0.1, 2, generator=g, progress=False),
        "annealed_langevin": lambda g: langevin.annealed_langevin(score, x2, [1.0, 0.5], 0.1, 2, generator=g,
                                                                  progress=False),
        "guided_ddpm_sample": lambda g: guidance.guided_ddpm_sample(eps, None, 0, 0.0, S, (2, 2), generator=g,
                                                                    progress=False),
        "guided_ddpm_step": lambda g: guidance.guided_ddpm_step(x2, 5, x2, S, grad=x2, scale=1.0, generator=g),
        "sample_per_class": lambda g: guidance.sample_per_class(lambda y: eps, S, 1, classes=(0,), steps=5,
                                                                generator=g, shape=(2,), progress=False),
        "GaussianMixture.sample": lambda g: mix.sample(3, generator=g),
        "nets.dsm_loss": lambda g: nets.dsm_loss(net_s, x2, [1.0, 0.5], generator=g),
        "nets.ddpm_loss": lambda g: nets.ddpm_loss(net_t, x2, S, generator=g),
        "train_ddpm_2d": lambda g: nets.train_ddpm_2d(net_t, lambda n, gg: mix.sample(n, generator=gg), S, steps=1,
                                                      batch_size=4, generator=g, progress=False),
        "train_dsm": lambda g: nets.train_dsm(net_s, lambda n, gg: mix.sample(n, generator=gg), [1.0, 0.5], steps=1,
                                              batch_size=4, generator=g, progress=False),
        "sliced_wasserstein": lambda g: metrics.sliced_wasserstein(x2, x2, generator=g),
        "tasks.ddpm_loss": lambda g: tasks.ddpm_loss(m, x_img, None, S, generator=g),
        "random_shift": lambda g: tasks.random_shift(x_img, 2, generator=g),
        "accuracy_vs_t": lambda g: classifier.accuracy_vs_t(classifier.NoisyMnistClassifier(T=10), x_img,
                                                            torch.tensor([0, 1]), S, [0, 5], generator=g),
    }
    for name, call in calls.items():
        for bad in (0, 1234, "seed"):
            with pytest.raises(TypeError, match=r"generator must be a torch.Generator or None, got \w+; make one "
                                                r"with torch.Generator\(\).manual_seed\(seed\)"):
                call(bad)
        call(gen())  # a real generator still works
    assert eps.calls > 0


# ----------------------------------------------------------------------------- 6. dtype
def test_images_in_another_dtype_than_the_network_are_refused_with_the_fix():
    m, judge, guide = tiny_unet(), classifier.MnistClassifier().eval(), classifier.NoisyMnistClassifier(T=10).eval()
    t = torch.tensor([1, 2])
    for dtype in (torch.float64, torch.float16, torch.uint8, torch.int64):
        x = torch.zeros(2, 1, 28, 28, dtype=dtype)
        got = str(dtype)
        fix = r"must be float32 \(the network's dtype\), got " + got + r"; use x.float\(\)"
        raises(TypeError, "x_t " + fix, m, x, t)
        raises(TypeError, "x " + fix, judge, x)
        raises(TypeError, "x " + fix, judge.features, x)
        raises(TypeError, "x_t " + fix, guide, x, t)
        raises(TypeError, "images " + fix, tasks.ddpm_loss, m, x, None, S)
    raises(TypeError, r"127.5 - 1", tasks.ddpm_loss, m, torch.zeros(2, 1, 28, 28, dtype=torch.uint8), None, S)
    raises(TypeError, r"x0 must be a floating-point tensor, got torch.int64; use x0.float\(\)",
           forward.q_sample, torch.zeros(2, 2, dtype=torch.long), 3, S)
    # what stays valid: float64 through the shared math, float32 into the networks
    assert forward.q_sample(torch.zeros(2, 2, dtype=torch.float64), 3, S)[0].dtype == torch.float64
    assert m(torch.zeros(2, 1, 28, 28), t).dtype == torch.float32


# ----------------------------------------------------------------------------- 7. NaN and inf in data
def test_nan_or_inf_in_clean_data_or_in_a_mixture_is_refused():
    net_t, net_s = nets.ScoreMLP(hidden=8, depth=1), nets.ScoreMLP(hidden=8, depth=1, cond="sigma")
    for bad in (NAN, INF, -INF):
        x2 = torch.tensor([[0.0, 1.0], [bad, 0.0]])
        img = torch.zeros(2, 1, 28, 28)
        img[1, 0, 3, 4] = bad
        raises(ValueError, "x0 contains NaN or infinite values", forward.q_sample, x2, 3, S)
        raises(ValueError, "x0 contains NaN or infinite values", nets.ddpm_loss, net_t, x2, S)
        raises(ValueError, "x0 contains NaN or infinite values", nets.dsm_loss, net_s, x2, [1.0, 0.5])
        raises(ValueError, "images contains NaN or infinite values", tasks.ddpm_loss, tiny_unet(), img, None, S)

        eye = [[1.0, 0.0], [0.0, 1.0]]
        raises(ValueError, "means contains NaN or infinite values", toy.GaussianMixture,
               [0.5, 0.5], [[0.0, 0.0], [bad, 1.0]], [eye, eye])
        raises(ValueError, "covs contains NaN or infinite values", toy.GaussianMixture,
               [1.0], [[0.0, 0.0]], [[[bad, 0.0], [0.0, 1.0]]])
        raises(ValueError, "weights contains NaN or infinite values", toy.GaussianMixture,
               [bad, 0.5], [[0.0, 0.0], [1.0, 1.0]], [eye, eye])
        raises(ValueError, "contains NaN or infinite values", toy.ring_mixture, std=bad)
        raises(ValueError, "contains NaN or infinite values", toy.ring_mixture, radius=bad)


# ----------------------------------------------------------------------------- 8. the schedule of the card
def test_a_schedule_other_than_the_cards_is_refused():
    m = tiny_unet()
    m.card = {"config": {"schedule": "linear", "T": 10}}
    with pytest.raises(ValueError, match=r"trained with the 'linear' schedule .* got the 'cosine' schedule; "
                                         r"use the schedule load_unet returns"):
        pipeline.sample(m, NoiseSchedule.cosine(10), 2, steps=5, progress=False)
    m.card = {"config": {"T": 10}}  # a card without "schedule": load_unet's default, linear
    with pytest.raises(ValueError, match="trained with the 'linear' schedule"):
        pipeline.sample(m, NoiseSchedule.cosine(10), 2, steps=5, progress=False)
    m.card = {"config": {"schedule": "cosine", "T": 10}}
    with pytest.raises(ValueError, match="trained with the 'cosine' schedule .* got the 'linear' schedule"):
        pipeline.sample(m, S, 2, "ddpm", progress=False)
    assert pipeline.sample(m, NoiseSchedule.cosine(10), 2, steps=5, progress=False).shape == (2, 1, 28, 28)
    del m.card  # a network built by hand: nothing to compare with
    assert pipeline.sample(m, NoiseSchedule.cosine(10), 1, steps=5, progress=False).shape == (1, 1, 28, 28)
