"""A task small enough to test the trainer's bookkeeping in milliseconds: y = w . x + noise."""
import torch


class LinearTask:
    unit, units_per_example = "examples", 1

    def __init__(self, config, device):
        self.width = config["model"]["width"]
        self.batch_size = config["batch_size"]
        self.model = torch.nn.Linear(self.width, 1)
        self.architecture = f"Linear({self.width}, 1)"

    def batches(self, generator, rank=0, world_size=1):
        w = torch.arange(1.0, self.width + 1)
        while True:
            x = torch.randn(self.batch_size, self.width, generator=generator)
            yield x, x @ w + 0.1 * torch.randn(self.batch_size, generator=generator)

    def loss(self, model, batch):
        x, y = batch
        return ((model(x).squeeze(-1) - y) ** 2).mean()

    def evaluate(self, model):
        return {"weight_norm": model.weight.norm().item()}


class OtherTask(LinearTask):
    """The same network trained for something else: a warm start from it must be refused."""
