"""Models for small images and their training loop (per-epoch logits recorded for the baselines)."""

from core.models.nets import MLP, MODEL_NAMES, ResNet18Small, SmallCNN, StagedNet, build_model, load_weights

__all__ = ["MODEL_NAMES", "MLP", "ResNet18Small", "SmallCNN", "StagedNet", "build_model", "load_weights"]
