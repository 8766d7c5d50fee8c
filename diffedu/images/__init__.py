"""Part 2: images. A U-Net DDPM on MNIST, two classifiers, and the pipeline that samples digits.

    unet        the U-Net eps_theta(x_t, t, y): ResBlocks with adaptive GroupNorm, attention at 7x7   (lesson 05)
    pipeline    load_unet, eps_model (labels, classifier-free guidance), batched sample          (lessons 05-08)
    classifier  the clean judge p(y | x) (accuracy, Fréchet features) and the noise-aware guide    (lessons 06-07)
    tasks       DDPMTask, ClassifierTask, NoisyClassifierTask for `python -m diffedu.train configs/mnist_*.json`

The math they use is shared with the 2D lessons and lives one level up: diffedu.schedules,
forward, samplers, guidance, metrics.
"""
from . import classifier, pipeline, unet
from .classifier import MnistClassifier, NoisyMnistClassifier
from .pipeline import eps_model, load_unet, sample
from .unet import IMAGE_SHAPE, UNet


def load_pretrained(name: str = "mnist_unet", device=None):
    """(model, schedule, card) for the shipped MNIST U-Net, in eval mode (see pipeline.load_unet)."""
    return load_unet(name, device=device)
