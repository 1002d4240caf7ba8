"""Models for small images, ImageNet backbones, and their training loop (per-epoch logits recorded for the baselines)."""

from core.models.backbones import Backbone, backbone_features
from core.models.nets import (
    MLP,
    MODEL_NAMES,
    ResNet18Small,
    SmallCNN,
    StagedNet,
    build_model,
    default_image_size,
    load_weights,
    model_channels,
)

__all__ = ["MODEL_NAMES", "MLP", "Backbone", "ResNet18Small", "SmallCNN", "StagedNet", "backbone_features",
           "build_model", "default_image_size", "load_weights", "model_channels"]
