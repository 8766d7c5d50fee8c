"""diffedu: the small PyTorch package behind the diffusion-models course.

One module per idea, in course order: schedule -> corrupt -> denoise -> sample -> guide.
``import diffedu as dd`` gives the helpers every lesson uses; the bigger pieces are
imported where they are taught (``from diffedu import images``, ``from diffedu.text import ...``).

    shared math      schedules, forward, samplers, sde, langevin, toy, nets, guidance, metrics,
                     flow (flow matching, Part 4), distill (progressive distillation, Part 4)
    images/          the MNIST U-Net, classifiers, training tasks and sampling pipeline (Part 2)
    text/            discrete diffusion, the masked diffusion LM and its autoregressive twin (Part 3)
    infrastructure   train, runs, checkpoints, data, runtime, check, plot, widgets, _validate
"""
from . import check, checkpoints, data, forward, plot, runtime, samplers, schedules, toy, widgets
from .check import check_answer, check_solution, expect
from .checkpoints import card_summary, load_checkpoint, load_into, load_results, parameter_count, save_checkpoint
from .forward import q_posterior, q_sample, q_step, x0_from_eps, eps_from_x0
from .runtime import banner, get_device, seed_everything
from .schedules import NoiseSchedule

__version__ = "0.1.0"
