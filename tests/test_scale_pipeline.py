"""Real-data paths of the pipeline at a tiny scale: an ImageNet backbone from a local weights file with a frozen
backbone, mixed gray/RGB folders converted and counted, the per-model default image size."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from core.cli import app
from core.pipeline import RunConfig, _load, score_run
from core.store import open_run


def _photo_folder(top, per_class: int = 8, size: int = 40, n_gray: int = 2):
    """Two classes of RGB 'photos' (reddish vs bluish, random texture), ``n_gray`` grayscale files among them,
    and one outlier of another size."""
    rng = np.random.default_rng(0)
    for c, cls in enumerate(["red", "blue"]):
        (top / cls).mkdir(parents=True)
        for i in range(per_class):
            arr = rng.integers(0, 120, size=(size, size + 8, 3), dtype=np.uint8)
            arr[..., 0 if c == 0 else 2] += 120
            img = Image.fromarray(arr)
            if i < n_gray // 2:
                img = img.convert("L")
            img.save(top / cls / f"{i}.png")
    Image.fromarray(rng.integers(0, 255, size=(size * 3, size * 2, 3), dtype=np.uint8)).save(top / "red" / "big.png")
    return top


def test_backbone_default_size_and_model_mode(tmp_path):
    top = _photo_folder(tmp_path / "photos")
    data, _ = _load(RunConfig(sources=[f"p=folder:{top}"], model="resnet18"))
    assert data.images.shape == (17, 3, 224, 224)  # the backbone's documented default, RGB
    assert data.load_info["converted_gray_to_rgb"] == 2 and data.load_info["image_size_from"] == "default of resnet18"
    small, _ = _load(RunConfig(sources=[f"p=folder:{top}"], model="cnn"))
    assert small.images.shape == (17, 3, 40, 48)  # most common size; majority mode (RGB)


def test_backbone_run_from_a_local_weights_file(tmp_path):
    from torchvision.models import resnet18

    top = _photo_folder(tmp_path / "photos")
    torch.manual_seed(0)
    torch.save(resnet18(weights=None).state_dict(), tmp_path / "r18.pt")  # random init, 1000-class head
    runner = CliRunner()
    res = runner.invoke(app, ["score", "--source", f"p=folder:{top}", "--model", "resnet18", "--weights",
                              str(tmp_path / "r18.pt"), "--image-size", "32", "--epochs", "3", "--holdout", "0.25",
                              "--scores", "loss,margin,el2n,uniqueness", "--map", "pca", "--device", "cpu",
                              "--runs-dir", str(tmp_path / "runs")])
    assert res.exit_code == 0, res.output
    run = open_run(res.output.strip().splitlines()[-1])
    m = run.manifest
    assert m["image_shape"] == [3, 32, 32] and m["image_mode"]["converted_gray_to_rgb"] == 2
    assert m["image_mode"]["image_size_from"] == "--image-size"
    assert m["model"]["frozen_backbone"] is True and m["model"]["weights_info"]["head"].startswith("skipped")
    assert run.embeddings().shape == (17, 512)
    # the stored features are the backbone's at the file's weights (frozen): recompute them independently
    from core.models import backbone_features, build_model, load_weights

    fresh = load_weights(build_model("resnet18", (3, 32, 32), 2), str(tmp_path / "r18.pt"))
    from core.data import load_sources

    data = load_sources([f"p=folder:{top}"], image_size=(32, 32), channels=3)
    np.testing.assert_allclose(run.embeddings(), backbone_features(fresh, data.images, "cpu"), rtol=1e-4, atol=1e-4)
    assert np.isfinite(run.df[["loss", "margin", "uniqueness"]].to_numpy()).all()


def test_bad_model_and_image_size_are_clear_errors(tmp_path):
    for bad, match in [(dict(model="alexnet"), "unknown --model"), (dict(image_size=0), "image_size"),
                       (dict(model="cnn", freeze_backbone=True), "needs an ImageNet backbone")]:
        cfg = RunConfig(sources=["digits"], runs_dir=str(tmp_path), **bad)
        with pytest.raises(Exception, match=match):
            score_run(cfg)
