"""Small models for the engine's tests: a Linear MLP and a conv net, both with a named head, and
the same models with LoRA adapters on their blocks (`adapted`), moved off their initial values
(`train_a_little`)."""

import torch
from torch import nn

from core.lowrank import lora

TARGETS = {"mlp": ["fc1", "fc2"], "cnn": ["conv1", "conv2"]}  # each toy's blocks


class ToyMLP(nn.Module):
    def __init__(self, k: int = 12, hidden: int = 16, classes: int = 5) -> None:
        super().__init__()
        self.fc1 = nn.Linear(k, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.head = nn.Linear(hidden, classes)
        self.head_name = "head"
        self.block_names = ["fc1", "fc2"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.fc1(x.flatten(1)))
        return self.head(torch.relu(self.fc2(x)))


class ToyCNN(nn.Module):
    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(6, 8, kernel_size=3, stride=2, padding=1)
        self.head = nn.Linear(8 * 4 * 4, classes)
        self.head_name = "head"
        self.block_names = ["conv1", "conv2"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.head(x.flatten(1))


def toy_models() -> dict[str, tuple[nn.Module, torch.Tensor]]:
    """Seeded models with a batch of inputs each."""
    torch.manual_seed(0)
    return {
        "mlp": (ToyMLP(), torch.randn(7, 12)),
        "cnn": (ToyCNN(), torch.randn(3, 1, 8, 8)),
    }


def adapted(name: str, **kwargs) -> tuple[nn.Module, nn.Module, torch.Tensor]:
    """The toy `name`, the same toy with adapters on its TARGETS (rank 2, alpha 4 unless
    `kwargs` say otherwise), and its inputs."""
    base, x = toy_models()[name]
    options = {"rank": 2, "alpha": 4.0, "seed": 0} | kwargs
    return base, lora.inject(base, TARGETS[name], **options), x


def train_a_little(model: nn.Module, x: torch.Tensor, steps: int = 5) -> None:
    """Move A and B (and m) away from their initial values so B A ≠ 0."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.5)
    for _ in range(steps):
        optimizer.zero_grad()
        model(x).pow(2).mean().backward()
        optimizer.step()
