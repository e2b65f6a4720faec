"""Embedding networks: images (B, 1, S, S) → L2-normalised embeddings (B, D).

* :class:`SpeckleNNEmbedding`: the paper's network (SpeckleNN, Wang et al. 2023): conv 5×5 (1→32) –
  BatchNorm – PReLU – maxpool 2; conv 5×5 (32→64) – BatchNorm – PReLU – maxpool 2; FC → 512 – PReLU –
  FC → D; L2 normalisation.
* :class:`ResidualEmbedding`: a small ResNet (3×3 basic blocks, stride-2 stages, global average pooling),
  fewer parameters than SpeckleNN's large first FC layer and not tied to one input size.
* :class:`CompactEmbedding`: a fast network for real-time classification in the parameter budget of the
  FPGA study of SpeckleNN (64.6 K parameters, 50-d embedding): 64,086 parameters with ``embedding_dim: 50``,
  about 15 times fewer multiply-adds than SpeckleNN at 96 × 96.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig


class SpeckleNNEmbedding(nn.Module):
    """SpeckleNN's embedding CNN for square inputs of side ``input_size`` (96 in the paper's simulations).

    Args:
        input_size: S.
        embedding_dim: D.
        channels: channels of the two conv blocks.
        hidden: width of the hidden FC layer.
    """

    def __init__(
        self, input_size: int = 96, embedding_dim: int = 128, channels: tuple[int, int] = (32, 64), hidden: int = 512
    ) -> None:
        super().__init__()
        c1, c2 = channels
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, kernel_size=5),
            nn.BatchNorm2d(c1),
            nn.PReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, kernel_size=5),
            nn.BatchNorm2d(c2),
            nn.PReLU(),
            nn.MaxPool2d(2),
        )
        side = ((input_size - 4) // 2 - 4) // 2
        if side < 1:
            raise ValueError(f"input size {input_size} is too small for SpeckleNN (needs at least 16)")
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c2 * side * side, hidden),
            nn.PReLU(),
            nn.Linear(hidden, embedding_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, S, S) → (B, D), unit length."""
        return F.normalize(self.head(self.features(x)), p=2.0, dim=1)


class _BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.act = nn.PReLU(c_out)
        self.skip: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.skip = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.act(y + self.skip(x))


class ResidualEmbedding(nn.Module):
    """Residual embedding CNN.

    Stem conv 5×5 stride 2 (1→w) – BN – PReLU; stages of ``blocks[i]`` basic blocks with 2^i·w channels,
    each stage after the first starting with stride 2; global average pooling; FC → D; L2 normalisation.
    """

    def __init__(self, embedding_dim: int = 128, width: int = 32, blocks: tuple[int, ...] = (1, 1, 1)) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(1, width, 5, stride=2, padding=2, bias=False),
            nn.BatchNorm2d(width),
            nn.PReLU(width),
        ]
        c = width
        for i, n in enumerate(blocks):
            c_out = width * 2**i
            for j in range(n):
                layers.append(_BasicBlock(c, c_out, 2 if (i > 0 and j == 0) else 1))
                c = c_out
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c, embedding_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, S, S) → (B, D), unit length."""
        h = self.features(x).mean(dim=(2, 3))
        return F.normalize(self.head(h), p=2.0, dim=1)


class CompactEmbedding(nn.Module):
    """Compact embedding CNN for real-time inference; not tied to one input size.

    Stem conv 5×5 stride 2 (1→16) – BN – PReLU – maxpool 2; conv 3×3 (16→32) – BN – PReLU – maxpool 2;
    conv 3×3 (32→64) – BN – PReLU – maxpool 2; conv 3×3 (64→64) – BN – PReLU; global average pooling;
    FC 64 → D; L2 normalisation. At S = 96 the feature maps are 24, 12, 6 and 6 pixels wide (7.5 M
    multiply-adds a shot against SpeckleNN's 109 M); parameters: 60,836 + 65·D (64,086 for D = 50).

    Args:
        embedding_dim: D.
        channels: channels of the four conv layers.
    """

    def __init__(self, embedding_dim: int = 50, channels: tuple[int, int, int, int] = (16, 32, 64, 64)) -> None:
        super().__init__()
        c1, c2, c3, c4 = channels

        def block(c_in: int, c_out: int, k: int, stride: int = 1) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2), nn.BatchNorm2d(c_out), nn.PReLU()]

        self.features = nn.Sequential(
            *block(1, c1, 5, 2), nn.MaxPool2d(2),
            *block(c1, c2, 3), nn.MaxPool2d(2),
            *block(c2, c3, 3), nn.MaxPool2d(2),
            *block(c3, c4, 3),
        )
        self.head = nn.Linear(c4, embedding_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, S, S) → (B, D), unit length."""
        h = self.features(x).mean(dim=(2, 3))
        return F.normalize(self.head(h), p=2.0, dim=1)


def build_model(config: ModelConfig, input_size: int) -> nn.Module:
    """The embedding network described by ``config`` for inputs (B, 1, input_size, input_size)."""
    if config.arch == "specklenn":
        return SpeckleNNEmbedding(input_size, config.embedding_dim, tuple(config.channels), config.hidden)
    if config.arch == "residual":
        return ResidualEmbedding(config.embedding_dim, config.width, tuple(config.blocks))
    if config.arch == "compact":
        if input_size < 16:
            raise ValueError(f"input size {input_size} is too small for the compact network (needs at least 16)")
        return CompactEmbedding(config.embedding_dim)
    raise ValueError(f"unknown model.arch {config.arch!r}")


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
