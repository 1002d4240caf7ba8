"""ImageNet backbones behind the staged interface: local torchvision weights (head of another size skipped),
frozen-backbone training on cached features, backbone_features from arrays and loaders. Nothing is downloaded."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from core.errors import InfoscopeError
from core.models import backbone_features, build_model, default_image_size, load_weights, model_channels
from core.models.backbones import IMAGENET_MEAN, IMAGENET_STD, TORCHVISION_BACKBONES
from core.models.training import TrainConfig, train_model


def _norm(x: torch.Tensor) -> torch.Tensor:
    return (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


@pytest.mark.parametrize("name", TORCHVISION_BACKBONES)
def test_backbone_staged_interface(name):
    torch.manual_seed(0)
    m = build_model(name, (3, 32, 32), 5).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        probes = m.probes(x)
        torch.testing.assert_close(probes[-1], m(x))
        assert isinstance(m.stages[-1], nn.Linear) and m.classifier.out_features == 5
        torch.testing.assert_close(m.classifier(m.embed(x)), m(x))
    assert probes[0].shape == (2, 3 * 32 * 32) and len(probes) == len(m.stages) + 1
    # every parameter of the wrapped torchvision network except its head has a key mapping
    assert m.source_keys and all(k.startswith("stages.") for k in m.source_keys.values())


def test_defaults_per_model():
    assert default_image_size("resnet18") == 224 and default_image_size("vit_b_16") == 224
    assert default_image_size("cnn") is None and default_image_size("resnet18_small") is None
    assert model_channels("convnext_tiny") == 3 and model_channels("mlp") is None


def test_torchvision_state_dict_with_1000_classes_loads_all_but_head(tmp_path):
    from torchvision.models import resnet18

    torch.manual_seed(1)
    tv = resnet18(weights=None).eval()  # 1000-class ImageNet head
    torch.save(tv.state_dict(), tmp_path / "r18.pt")
    torch.manual_seed(2)
    m = build_model("resnet18", (3, 64, 64), 4)
    head_before = m.classifier.weight.detach().clone()
    load_weights(m, str(tmp_path / "r18.pt"))
    m.eval()
    assert m.weights_info["head"].startswith("skipped")
    torch.testing.assert_close(m.classifier.weight, head_before)  # new head kept
    # brute force: the wrapper's features are torchvision's pooled features on normalised input
    x = torch.rand(3, 3, 64, 64)
    tv.fc = nn.Identity()
    with torch.no_grad():
        torch.testing.assert_close(m.embed(x), tv(_norm(x)))
        # grayscale input is the same image repeated on three channels
        g = torch.rand(2, 1, 64, 64)
        torch.testing.assert_close(m.embed(g), tv(_norm(g.repeat(1, 3, 1, 1))))


def test_same_class_count_loads_the_head_and_wrapper_keys_round_trip(tmp_path):
    from torchvision.models import efficientnet_b0

    tv = efficientnet_b0(weights=None, num_classes=3)
    torch.save({"state_dict": tv.state_dict()}, tmp_path / "e.pt")
    m = load_weights(build_model("efficientnet_b0", (3, 32, 32), 3), str(tmp_path / "e.pt"))
    assert m.weights_info["head"] == "loaded"
    torch.testing.assert_close(m.classifier.weight, tv.classifier[1].weight)
    torch.save(m.state_dict(), tmp_path / "own.pt")
    m2 = load_weights(build_model("efficientnet_b0", (3, 32, 32), 3), str(tmp_path / "own.pt"))
    for (ka, a), (kb, b) in zip(m.state_dict().items(), m2.state_dict().items(), strict=True):
        assert ka == kb
        torch.testing.assert_close(a, b)


def test_weights_of_another_architecture_is_a_clear_error(tmp_path):
    from torchvision.models import resnet18

    torch.save(resnet18(weights=None).state_dict(), tmp_path / "r18.pt")
    with pytest.raises(ValueError, match="does not fit resnet50"):
        load_weights(build_model("resnet50", (3, 32, 32), 2), str(tmp_path / "r18.pt"))


def test_torchvision_weights_offline_is_one_clear_error(monkeypatch):
    import torchvision.models as tvm

    def offline(*a, **k):
        if k.get("weights") is not None:
            raise OSError("no network")
        raise AssertionError("unexpected")

    monkeypatch.setattr(tvm, "get_model", offline)
    with pytest.raises(InfoscopeError, match="could not get torchvision's pretrained resnet18.*--weights PATH"):
        build_model("resnet18", (3, 32, 32), 2, weights="torchvision")
    with pytest.raises(ValueError, match="needs an ImageNet backbone"):
        train_model(np.zeros((4, 1, 8, 8), np.float32), np.array([0, 1, 0, 1]), np.arange(4), 2,
                    TrainConfig(model="cnn", weights="torchvision"), device="cpu")


def test_timm_absent_is_a_clear_error():
    try:
        import timm  # noqa: F401
    except ImportError:
        with pytest.raises(InfoscopeError, match="needs the timm package"):
            build_model("timm:resnet18", (3, 32, 32), 2)
    else:  # pragma: no cover - only where timm is installed
        m = build_model("timm:resnet18", (3, 32, 32), 2).eval()
        x = torch.rand(2, 3, 32, 32)
        torch.testing.assert_close(m.classifier(m.embed(x)), m(x))


def _bright_dark(n: int = 40, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.uniform(0, 0.4, (n, 3, size, size)).astype(np.float32) + 0.55 * y[:, None, None, None].astype(np.float32)
    return x, y


def test_frozen_backbone_trains_only_the_head_on_cached_features(tmp_path):
    x, y = _bright_dark()
    cfg = TrainConfig(model="resnet18", epochs=30, batch_size=16, lr=1e-2, freeze_backbone=True)
    res = train_model(x, y, np.arange(30), 2, cfg, seed=0, device="cpu", test_idx=np.arange(30, 40))
    state = res.model.state_dict()
    head = {f"stages.{len(res.model.stages) - 1}.weight", f"stages.{len(res.model.stages) - 1}.bias"}
    for k, v in res.init_state.items():
        if k in head:
            assert not torch.equal(v, state[k]), k  # the head moved
        else:
            torch.testing.assert_close(v, state[k])  # the backbone (incl. BatchNorm statistics) did not
    # cached features = the backbone's features in eval mode; logits = head(features) every epoch
    np.testing.assert_allclose(res.features, backbone_features(res.model, x, "cpu", batch_size=7), rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        final = res.model.classifier(torch.as_tensor(res.features)).numpy()
    np.testing.assert_allclose(res.epoch_logits[-1], final, rtol=1e-5, atol=1e-5)
    assert res.epoch_logits.shape == (30, 40, 2)
    assert res.train_acc > 0.9 and res.test_acc > 0.8  # bright vs dark is linear in random-init features
    # passing the features in gives the same run
    again = train_model(x, y, np.arange(30), 2, cfg, seed=0, device="cpu", features=res.features)
    np.testing.assert_array_equal(again.epoch_logits, res.epoch_logits)


def test_backbone_features_from_a_dataloader_equals_the_array_path():
    from torch.utils.data import DataLoader, TensorDataset

    x, y = _bright_dark(10, 32)
    m = build_model("resnet18", (3, 32, 32), 2)
    a = backbone_features(m, x, "cpu", batch_size=4)
    loader = DataLoader(TensorDataset(torch.as_tensor(x), torch.as_tensor(y)), batch_size=3)
    np.testing.assert_allclose(backbone_features(m, loader, "cpu"), a, rtol=1e-5, atol=1e-5)
    assert a.shape == (10, 512) and a.dtype == np.float32
