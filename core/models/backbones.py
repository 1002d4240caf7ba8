"""ImageNet backbones (torchvision, and timm when installed) behind the project's :class:`StagedNet` interface.

A backbone becomes ``stages`` = [input preparation + stem, …blocks…, pooled flat features, ``nn.Linear``
classifier], so ``forward``/``probes``/``embed``/``classifier`` mean what they mean for the small nets
(``core.models.nets``). The classifier is a fresh ``nn.Linear(d, n_classes)``; the ImageNet head is dropped.

Input: images in [0, 1], (n, C, H, W) with C = 1 or 3. The first stage repeats a grayscale channel to three
and applies the ImageNet normalisation (x − mean)/std (mean 0.485, 0.456, 0.406; std 0.229, 0.224, 0.225),
so the rest of the engine (attacks, duplicates, CG on pixels) keeps working in [0, 1] pixel space.

Default image size: 224 for every backbone (``DEFAULT_IMAGE_SIZE``); ``vit_b_16`` needs a multiple of 16.

Weights: ``load_backbone_weights`` takes a local file (``torch.load(weights_only=True)``) holding a
torchvision state dict (``conv1.weight``, ``layer1…``, ``fc.weight``) or this wrapper's own keys
(``stages.0…``); a head with another number of classes (e.g. ImageNet's 1000) is skipped and the new head
keeps its seeded initialisation. ``weights="torchvision"`` asks torchvision for its ``DEFAULT`` weights
(torch hub cache, downloaded only when the machine is online; never in the tests).

Frozen backbone: :func:`backbone_features` computes the penultimate features once, in eval mode, in
batches; ``core.models.training`` then trains only the head on these cached features.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

from core.device import resolve_device, rows_per_batch
from core.errors import InfoscopeError
from core.models.nets import StagedNet

TORCHVISION_BACKBONES = ("resnet18", "resnet50", "convnext_tiny", "efficientnet_b0", "vit_b_16")
"""torchvision ImageNet architectures accepted by ``--model``; ``timm:<name>`` adds any timm model."""

DEFAULT_IMAGE_SIZE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def is_backbone(name: str) -> bool:
    """True for an ImageNet backbone name (torchvision's or ``timm:<name>``)."""
    return name in TORCHVISION_BACKBONES or name.startswith("timm:")


class ImageNetInput(nn.Module):
    """Gray → 3 channels (repeat), then (x − mean)/std with the ImageNet statistics (non-persistent buffers)."""

    def __init__(self, mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] != 3:
            raise ValueError(f"an ImageNet backbone takes 1 or 3 channels, got {x.shape[1]}")
        return (x - self.mean) / self.std


class _VitTokens(nn.Module):
    """ViT stem: patchify (``conv_proj``), prepend the class token, add the position embedding."""

    def __init__(self, vit: nn.Module) -> None:
        super().__init__()
        self.conv_proj = vit.conv_proj
        self.class_token = vit.class_token
        self.pos_embedding = vit.encoder.pos_embedding
        self.dropout = vit.encoder.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_proj(x)
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1)
        return self.dropout(x + self.pos_embedding)


class _ClassToken(nn.Module):
    """Final LayerNorm, then the class token's features (n, d)."""

    def __init__(self, ln: nn.Module) -> None:
        super().__init__()
        self.ln = ln

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln(x)[:, 0]


class _TimmFeatures(nn.Module):
    """A timm model without its classifier: ``forward_features`` then the pooled pre-logits."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_head(self.net.forward_features(x), pre_logits=True).flatten(1)


class Backbone(StagedNet):
    """An ImageNet network split into stages, with a new ``nn.Linear`` head for ``n_classes``.

    Attributes:
        arch: the architecture name (``resnet18``, ``timm:…``).
        source_keys: the wrapped network's own state-dict keys (torchvision / timm names) → this module's keys,
            derived from tensor identity; used to load state dicts saved from the original network.
        head_keys: the keys of the original classifier (skipped when their shape does not match).
    """

    default_image_size = DEFAULT_IMAGE_SIZE

    def __init__(self, arch: str, stages: list[nn.Module], original: nn.Module, original_head: str) -> None:
        super().__init__()
        self.arch = arch
        self.stages = nn.ModuleList(stages)
        mine = {id(t): k for k, t in self.state_dict(keep_vars=True).items()}
        self.source_keys: dict[str, str] = {}
        self.head_keys: set[str] = set()
        for k, t in original.state_dict(keep_vars=True).items():
            if k.startswith(original_head + "."):
                self.head_keys.add(k)
            elif id(t) in mine:
                self.source_keys[k] = mine[id(t)]


def _torchvision_stages(arch: str, net: nn.Module, n_classes: int) -> tuple[list[nn.Module], str]:
    """(stages, name of the original classifier module) for a torchvision architecture."""
    prep = ImageNetInput()
    if arch.startswith("resnet"):
        head = nn.Linear(net.fc.in_features, n_classes)
        return [nn.Sequential(prep, net.conv1, net.bn1, net.relu, net.maxpool), net.layer1, net.layer2, net.layer3,
                nn.Sequential(net.layer4, net.avgpool, nn.Flatten()), head], "fc"
    if arch == "convnext_tiny":
        f = net.features
        ln, lin = net.classifier[0], net.classifier[2]
        return [nn.Sequential(prep, f[0], f[1]), nn.Sequential(f[2], f[3]), nn.Sequential(f[4], f[5]),
                nn.Sequential(f[6], f[7], net.avgpool, ln, nn.Flatten()),
                nn.Linear(lin.in_features, n_classes)], "classifier.2"
    if arch == "efficientnet_b0":
        f = net.features
        lin = net.classifier[1]
        return [nn.Sequential(prep, f[0], f[1]), nn.Sequential(f[2], f[3]), nn.Sequential(f[4], f[5]),
                nn.Sequential(f[6], f[7], f[8], net.avgpool, nn.Flatten()),
                nn.Linear(lin.in_features, n_classes)], "classifier.1"
    if arch == "vit_b_16":
        layers = list(net.encoder.layers)
        groups = [nn.Sequential(*layers[i:i + 3]) for i in range(0, len(layers), 3)]
        return [nn.Sequential(prep, _VitTokens(net)), *groups[:-1], nn.Sequential(groups[-1], _ClassToken(net.encoder.ln)),
                nn.Linear(net.heads.head.in_features, n_classes)], "heads"
    raise InfoscopeError(f"unknown backbone {arch!r}")  # pragma: no cover - guarded by is_backbone


def _timm_model(name: str, pretrained: bool) -> nn.Module:
    try:
        import timm
    except ImportError as e:
        raise InfoscopeError(f"--model timm:{name} needs the timm package (pip install timm)") from e
    try:
        return timm.create_model(name, pretrained=pretrained)
    except Exception as e:  # noqa: BLE001 - unknown name, or a failed download
        raise InfoscopeError(f"timm could not create {name!r}{' with pretrained weights' if pretrained else ''}: {e}") from e


def _torchvision_model(arch: str, image_size: int, pretrained: bool) -> nn.Module:
    from torchvision import models

    kwargs: dict[str, Any] = {}
    if arch == "vit_b_16":
        if image_size % 16:
            raise InfoscopeError(f"vit_b_16 needs an image size divisible by 16, got {image_size}")
        kwargs["image_size"] = image_size
    if not pretrained:
        return models.get_model(arch, weights=None, **kwargs)
    try:
        weights = models.get_model_weights(arch).DEFAULT
        return models.get_model(arch, weights=weights, **kwargs)
    except Exception as e:  # noqa: BLE001 - offline, proxy, broken cache: one clear line
        raise InfoscopeError(
            f"could not get torchvision's pretrained {arch} weights (offline or no cache?): {e}; "
            "pass --weights PATH to a local state dict instead") from e


def build_backbone(name: str, image_shape: tuple[int, int, int], n_classes: int, *,
                   weights: str | None = None) -> Backbone:
    """A :class:`Backbone` for ``name``; ``weights="torchvision"`` (or ``"timm"``) fetches the library's own
    pretrained weights (online or cached); a path is loaded later by :func:`load_backbone_weights`."""
    c, h, w = image_shape
    if c not in (1, 3):
        raise InfoscopeError(f"{name} takes 1- or 3-channel images, got {c}")
    pretrained = weights in ("torchvision", "timm")
    if name.startswith("timm:"):
        arch = name.split(":", 1)[1]
        net = _timm_model(arch, pretrained)
        net.eval()
        head = net.get_classifier()
        if not isinstance(head, nn.Linear):
            raise InfoscopeError(f"timm:{arch} has no single linear classifier; choose another model")
        head_name = next(k for k, m in net.named_modules() if m is head)
        head_keys = {f"{head_name}.{k}" for k in head.state_dict()}
        net.reset_classifier(0)  # the wrapper's own head replaces it
        cfg = getattr(net, "pretrained_cfg", None) or {}
        prep = ImageNetInput(tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD)))
        model = Backbone(name, [nn.Sequential(prep, _TimmFeatures(net)), nn.Linear(head.in_features, n_classes)],
                         net, head_name)
        model.head_keys |= head_keys
        return model
    if weights == "timm":
        raise InfoscopeError("--weights timm is for timm:<name> models; use --weights torchvision")
    if h != w and name == "vit_b_16":
        raise InfoscopeError(f"vit_b_16 needs square images, got {h}×{w}; pass --image-size")
    net = _torchvision_model(name, h, pretrained)
    stages, head_name = _torchvision_stages(name, net, n_classes)
    return Backbone(name, stages, net, head_name)


def load_backbone_weights(model: Backbone, state: dict[str, torch.Tensor], path: str) -> dict[str, Any]:
    """Load ``state`` (torchvision/timm keys or this wrapper's keys) into ``model``, all but a mismatched head.

    Returns what happened (``{"loaded": n, "head": "loaded" | "skipped (…)"}``). Raises ``ValueError`` naming
    the first missing or unexpected key when the file is for another architecture.
    """
    own = model.state_dict()
    if not any(k in own for k in state):
        state = {model.source_keys.get(k, k): v for k, v in state.items()}
    head_prefix = f"stages.{len(model.stages) - 1}."
    head_in = {k for k in state if k in model.head_keys or k.startswith(head_prefix)}
    body = {k: v for k, v in state.items() if k not in head_in}
    missing = [k for k in own if not k.startswith(head_prefix) and k not in body]
    unexpected = [k for k in body if k not in own]
    if missing or unexpected:
        what = f"missing {missing[0]!r}" if missing else f"unexpected {unexpected[0]!r}"
        raise ValueError(f"{path} does not fit {model.arch}: {what} "
                         f"({len(missing)} missing, {len(unexpected)} unexpected keys)")
    bad = [k for k, v in body.items() if tuple(v.shape) != tuple(own[k].shape)]
    if bad:
        raise ValueError(f"{path} does not fit {model.arch} at these image settings: {bad[0]!r} has shape "
                         f"{tuple(body[bad[0]].shape)}, the model {tuple(own[bad[0]].shape)}")
    head = {k[len(head_prefix):]: v for k, v in state.items() if k.startswith(head_prefix)}
    if not head:
        head = {k.rsplit(".", 1)[1]: v for k, v in state.items() if k in model.head_keys}
    model.load_state_dict(body, strict=False)
    info: dict[str, Any] = {"loaded": len(body)}
    cls = model.classifier
    if head and tuple(head.get("weight", torch.empty(0)).shape) == tuple(cls.weight.shape):
        cls.load_state_dict(head)
        info["head"] = "loaded"
    else:
        shape = tuple(head["weight"].shape) if "weight" in head else None
        info["head"] = f"skipped (file head {shape}, model head {tuple(cls.weight.shape)}): new head"
    return info


@torch.no_grad()
@torch.no_grad()
def backbone_features(model: StagedNet, images_or_loader: np.ndarray | torch.Tensor | Iterable, device: Any = "cpu",
                      batch_size: int | None = None) -> np.ndarray:
    """Penultimate features ``model.embed(x)`` of every image, computed once in eval mode: float32 (n, d).

    ``images_or_loader`` is an array/tensor/:class:`~core.data.image_store.ImageStore` (n, C, H, W) in [0, 1]
    (processed ``batch_size`` rows at a time)
    or an iterable of batches (a ``DataLoader``) yielding tensors or tuples whose first item is the images.
    The model is left in eval mode.
    """
    dev = resolve_device(device)
    model.to(dev).eval()
    if isinstance(images_or_loader, np.ndarray | torch.Tensor) or hasattr(images_or_loader, "shape"):
        x = images_or_loader
        batch_size = batch_size or rows_per_batch(tuple(x.shape[1:]))
        batches: Iterable = (x[i:i + batch_size] for i in range(0, len(x), batch_size))
    else:
        batches = images_or_loader
    out = []
    for b in batches:
        xb = b[0] if isinstance(b, tuple | list) else b
        out.append(model.embed(torch.as_tensor(xb, dtype=torch.float32).to(dev)).float().cpu())
    if not out:
        return np.zeros((0, model.classifier.in_features), np.float32)
    return torch.cat(out).numpy()
