"""Networks for small images, all sharing one interface the scores rely on.

Every model is a chain of ``stages`` (``nn.ModuleList``): ``forward(x)`` applies them in order, the last stage
is the linear classifier, and the output of the second-to-last stage is a flat feature vector (the
"penultimate features" used for embeddings, kNN and the structured last-layer NTK block).

- ``probes(x)`` returns the representation after the input and after every stage (flattened), ending with
  the logits: the layers at which prediction depth places its k-NN probes (Baldock et al., 2021).
- ``embed(x)`` returns the penultimate features.
"""

from __future__ import annotations

import torch
from torch import nn


class StagedNet(nn.Module):
    """Base class: a network made of ``stages`` applied in sequence."""

    stages: nn.ModuleList

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = stage(x)
        return x

    def probes(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[input, after stage 1, ..., logits], each flattened to (batch, features)."""
        out = [x.flatten(1)]
        for stage in self.stages:
            x = stage(x)
            out.append(x.flatten(1))
        return out

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (input of the final linear classifier)."""
        for stage in self.stages[:-1]:
            x = stage(x)
        return x.flatten(1)

    @property
    def classifier(self) -> nn.Linear:
        head = self.stages[-1]
        assert isinstance(head, nn.Linear)
        return head


def _conv_block(c_in: int, c_out: int, pool: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class SmallCNN(StagedNet):
    """Three conv blocks (8, 16, 32 channels; BatchNorm, ReLU, 2×2 max-pooling), a 48-unit hidden layer on the
    flattened 3×3 maps and a linear classifier: ~20.6k parameters for 1×28×28 inputs and 10 classes."""

    def __init__(self, in_channels: int = 1, n_classes: int = 10, widths: tuple[int, int, int] = (8, 16, 32),
                 hidden: int = 48, image_size: tuple[int, int] = (28, 28)):
        super().__init__()
        w1, w2, w3 = widths
        h, w = image_size
        for _ in range(3):
            h, w = h // 2, w // 2
        if h < 1 or w < 1:
            raise ValueError(f"SmallCNN needs images of at least 8×8 pixels, got {image_size}")
        self.stages = nn.ModuleList(
            [
                _conv_block(in_channels, w1, pool=True),
                _conv_block(w1, w2, pool=True),
                nn.Sequential(_conv_block(w2, w3, pool=True), nn.Flatten()),
                nn.Sequential(nn.Linear(w3 * h * w, hidden), nn.ReLU()),
                nn.Linear(hidden, n_classes),
            ]
        )


class MLP(StagedNet):
    """Fully connected ReLU network on flattened pixels; ``hidden=(1024,)`` is the SI paper's MNIST MLP."""

    def __init__(self, in_features: int, n_classes: int = 10, hidden: tuple[int, ...] = (256, 128)):
        super().__init__()
        stages: list[nn.Module] = []
        prev = in_features
        for i, h in enumerate(hidden):
            layers: list[nn.Module] = [nn.Flatten()] if i == 0 else []
            layers += [nn.Linear(prev, h), nn.ReLU()]
            stages.append(nn.Sequential(*layers))
            prev = h
        if not hidden:
            stages.append(nn.Flatten())
        stages.append(nn.Linear(prev, n_classes))
        self.stages = nn.ModuleList(stages)


class ResNet18Small(StagedNet):
    """torchvision ResNet-18 adapted to small images: 3×3 stride-1 stem without max-pooling, any channel count.

    Randomly initialised; pretrained weights come only from a local state dict (``load_weights``).
    """

    def __init__(self, in_channels: int = 1, n_classes: int = 10):
        super().__init__()
        from torchvision.models import resnet18

        net = resnet18(weights=None, num_classes=n_classes)
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.stages = nn.ModuleList(
            [
                nn.Sequential(net.conv1, net.bn1, net.relu),
                net.layer1,
                net.layer2,
                net.layer3,
                nn.Sequential(net.layer4, net.avgpool, nn.Flatten()),
                net.fc,
            ]
        )


SMALL_MODELS = ("cnn", "mlp", "resnet18_small")
"""Networks trained from scratch on small images (default image size: the most common size of the sources)."""


MODEL_NAMES = ("cnn", "mlp", "resnet18_small", "resnet18", "resnet50", "convnext_tiny", "efficientnet_b0", "vit_b_16")


def default_image_size(name: str) -> int | None:
    """The image side a model expects when ``--image-size`` is not given.

    224 for the ImageNet backbones (``resnet18``, ``resnet50``, ``convnext_tiny``, ``efficientnet_b0``,
    ``vit_b_16``, ``timm:<name>``); ``None`` for the small nets (``cnn``, ``mlp``, ``resnet18_small``), which
    take the most common image size among the sources (28×28 for the bundled MNIST).
    """
    from core.models.backbones import DEFAULT_IMAGE_SIZE, is_backbone

    return DEFAULT_IMAGE_SIZE if is_backbone(name) else None


def model_channels(name: str) -> int | None:
    """Channels a model needs: 3 for the ImageNet backbones, ``None`` (any: the sources' majority) otherwise."""
    from core.models.backbones import is_backbone

    return 3 if is_backbone(name) else None


def build_model(name: str, image_shape: tuple[int, int, int], n_classes: int, **kwargs) -> StagedNet:
    """Build a model for images of shape (C, H, W): a small net (``cnn`` | ``mlp`` | ``resnet18_small``) or an
    ImageNet backbone (``resnet18`` … ``vit_b_16``, ``timm:<name>``; see ``core.models.backbones``).
    Backbones take ``weights="torchvision"`` to fetch torchvision's own pretrained weights."""
    from core.models.backbones import build_backbone, is_backbone

    c, h, w = image_shape
    if is_backbone(name):
        return build_backbone(name, image_shape, n_classes, **kwargs)
    if name == "cnn":
        return SmallCNN(c, n_classes, image_size=(h, w), **kwargs)
    if name == "mlp":
        return MLP(c * h * w, n_classes, **kwargs)
    if name == "resnet18_small":
        return ResNet18Small(c, n_classes)
    raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)} or timm:<name>")


def load_weights(model: nn.Module, path: str) -> nn.Module:
    """Load a local state dict (``torch.load(weights_only=True)``: no arbitrary code from the file).

    Accepts a plain state dict or a checkpoint dict with a ``state_dict``/``model`` entry; keys may be a
    torchvision network's (``conv1.weight``...) or this module's (``stages.0.0.weight``...). For an ImageNet
    backbone a classifier with another number of classes is skipped (the new head keeps its initialisation);
    what was loaded is kept in ``model.weights_info``.
    """
    from core.models.backbones import Backbone, load_backbone_weights

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as e:
        raise ValueError(f"weights file not found: {path}") from e
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad file for the user
        raise ValueError(f"could not load weights from {path}: {e}") from e
    if isinstance(state, dict) and ("state_dict" in state or "model" in state):
        state = state.get("state_dict", state.get("model"))
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict")
    if isinstance(model, Backbone):
        model.weights_info = load_backbone_weights(model, state, path)
        return model
    try:
        try:
            model.load_state_dict(state)
        except RuntimeError:
            if isinstance(model, ResNet18Small):
                model.load_state_dict(_torchvision_to_staged(state))
            else:
                raise
    except (RuntimeError, KeyError, TypeError) as e:
        first = " ".join(str(e).split())[:300]
        raise ValueError(f"weights {path} do not fit the {type(model).__name__} network built for this data "
                         f"(wrong architecture, class count or channels?): {first}") from e
    return model


def _torchvision_to_staged(state: dict) -> dict:
    """Map torchvision ResNet-18 keys onto ``ResNet18Small`` stage keys."""
    prefix = {"conv1": "stages.0.0", "bn1": "stages.0.1", "layer1": "stages.1", "layer2": "stages.2",
              "layer3": "stages.3", "layer4": "stages.4.0", "fc": "stages.5"}
    out = {}
    for k, v in state.items():
        head, _, rest = k.partition(".")
        if head in prefix:
            out[f"{prefix[head]}.{rest}"] = v
    return out
