"""Architecture registry: shapes, stems, heads, CAM layers, offline weights, meta round trip."""
from __future__ import annotations

import urllib.error
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from xreport.errors import CheckpointError, ConfigError, OfflineError
from xreport.models import (ARCHS, build_model, cam_target_layer, classifier_layer,
                            count_flops, count_parameters, load_weights, model_from_meta,
                            resolve_small_stem, set_train_mode, weights_cache_path, weights_url,
                            OrdinalHead, resolve_head)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Two spinning OpenMP threads on a busy 2-core machine are several times slower."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _first_conv(model: nn.Module) -> nn.Conv2d:
    return model.features.conv0 if arch_is_densenet(model) else model.conv1


def arch_is_densenet(model: nn.Module) -> bool:
    return isinstance(model, torchvision.models.DenseNet)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("in_channels", [1, 3])
def test_small_stem_forward_shape_and_cam_layer(arch: str, in_channels: int) -> None:
    # On the meta device: every layer's shapes are checked without the cost of real maths.
    with torch.device("meta"):
        model = build_model(arch, num_classes=3, in_channels=in_channels,
                            small_input_stem=True).eval()
        out = model(torch.rand(2, in_channels, 8, 8))
    assert out.shape == (2, 3)
    conv = _first_conv(model)
    assert (conv.in_channels, conv.kernel_size, conv.stride) == (in_channels, (3, 3), (1, 1))
    pool = model.features.pool0 if arch_is_densenet(model) else model.maxpool
    assert isinstance(pool, nn.Identity)
    layer, name = cam_target_layer(model)
    if arch.startswith("densenet"):
        assert name == "features.norm5" and layer is model.features.norm5
    else:
        assert name == "layer4" and layer is model.layer4[-1]
    assert classifier_layer(model).out_features == 3


@pytest.mark.parametrize("arch", ["resnet18", "densenet121"])
def test_real_forward_on_tiny_grey_input(arch: str) -> None:
    model = build_model(arch, num_classes=2, in_channels=1, small_input_stem=True).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 1, 8, 8))
    assert out.shape == (2, 2) and torch.isfinite(out).all()


def test_standard_stem_keeps_imagenet_layout() -> None:
    model = build_model("resnet18", num_classes=2, in_channels=1, small_input_stem=False)
    assert model.conv1.kernel_size == (7, 7) and model.conv1.stride == (2, 2)
    assert isinstance(model.maxpool, nn.MaxPool2d)
    with torch.no_grad():
        assert model.eval()(torch.rand(1, 1, 64, 64)).shape == (1, 2)


def test_dropout_head_and_plain_head() -> None:
    model = build_model("densenet121", num_classes=4, in_channels=1, small_input_stem=True,
                        dropout=0.3)
    assert isinstance(model.classifier, nn.Sequential)
    assert isinstance(model.classifier[0], nn.Dropout) and model.classifier[0].p == 0.3
    assert classifier_layer(model) is model.classifier[1]
    plain = build_model("resnet18", num_classes=4, in_channels=1, small_input_stem=True)
    assert isinstance(plain.fc, nn.Linear)


def test_invalid_arguments() -> None:
    with pytest.raises(ConfigError, match="resnet18"):
        build_model("vgg16", num_classes=2)
    with pytest.raises(ConfigError, match="in_channels"):
        build_model("resnet18", num_classes=2, in_channels=2)
    with pytest.raises(ConfigError, match="num_classes"):
        build_model("resnet18", num_classes=1)


@pytest.mark.parametrize(("setting", "size", "expected"), [
    ("auto", 28, True), ("auto", 64, True), ("auto", 95, True), ("auto", 96, False),
    ("auto", 224, False), ("on", 224, True), ("off", 28, False)])
def test_resolve_small_stem(setting: str, size: int, expected: bool) -> None:
    assert resolve_small_stem(setting, size) is expected


def test_resolve_small_stem_rejects_unknown() -> None:
    with pytest.raises(ConfigError, match="auto, on, off"):
        resolve_small_stem("yes", 64)


def test_freeze_backbone_trains_only_the_head() -> None:
    model = build_model("resnet18", num_classes=2, in_channels=1, small_input_stem=True,
                        freeze_backbone=True)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"fc.weight", "fc.bias"}
    counts = count_parameters(model)
    assert counts["trainable"] == 512 * 2 + 2 < counts["total"]
    set_train_mode(model, freeze_backbone=True)
    assert model.training and not model.bn1.training and not model.layer4[0].bn2.training


def test_count_flops_counts_multiply_adds_twice() -> None:
    with torch.device("meta"):
        model = build_model("resnet18", num_classes=1000, in_channels=3, small_input_stem=False)
        flops = count_flops(model, 224, 3)
    # torchvision lists 1.81 G multiply-adds for ResNet-18 at 224 px.
    assert 3.5e9 < flops < 3.8e9
    assert model.training  # the count does not leave the model in eval mode
    with torch.device("meta"):
        small = build_model("resnet18", num_classes=2, in_channels=1, small_input_stem=True)
        standard = build_model("resnet18", num_classes=2, in_channels=1, small_input_stem=False)
        # The small stem keeps 16x the pixels through layer1..layer4.
        assert count_flops(small, 28, 1) > 10 * count_flops(standard, 28, 1)


# ---------------------------------------------------------------- pretrained, offline

@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    return tmp_path


def _offline(url: str, *args: object, **kwargs: object) -> None:
    raise urllib.error.URLError("no network")


def test_pretrained_absent_and_offline_says_where_to_put_the_file(
        torch_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.hub, "download_url_to_file", _offline)
    expected = torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert weights_cache_path("resnet18") == expected
    with pytest.raises(OfflineError) as info:
        build_model("resnet18", num_classes=2, pretrained=True)
    message = str(info.value)
    assert str(expected) in message and weights_url("resnet18") in message
    assert "model.weights" in message and "\n" not in message


def test_pretrained_downloads_through_torch_hub_with_the_hash_checked(
        torch_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    reference = torchvision.models.resnet18(weights=None).state_dict()
    calls: list[tuple[str, dict]] = []

    def fake_download(url: str, dst: str, **kwargs: object) -> None:
        calls.append((url, kwargs))
        torch.save(reference, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    model = build_model("resnet18", num_classes=3, in_channels=3, pretrained=True)
    # torch's download checks the hash in the file name; the cached file is then read by the
    # bounded loader (runs.load_tensor_file), like any file from outside.
    assert calls == [(weights_url("resnet18"), {"hash_prefix": "f37072fd", "progress": False})]
    assert torch.equal(model.layer2[0].conv1.weight, reference["layer2.0.conv1.weight"])
    assert model.fc.out_features == 3


def test_local_weights_file_adapts_head_and_channels(tmp_path: Path) -> None:
    # A domain backbone: 1-channel stem, a 14-class head, saved wrapped as training scripts do.
    source = torchvision.models.resnet18(weights=None, num_classes=14)
    source.conv1 = torch.nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    state = {f"module.{k}": v for k, v in source.state_dict().items()}
    path = tmp_path / "chest.pth"
    torch.save({"state_dict": state, "epoch": 3}, path)
    rgb = build_model("resnet18", num_classes=2, in_channels=3, weights=path)
    assert torch.allclose(rgb.conv1.weight, source.conv1.weight.repeat(1, 3, 1, 1) / 3)
    assert torch.equal(rgb.layer4[1].bn2.running_mean, source.layer4[1].bn2.running_mean)
    assert rgb.fc.out_features == 2
    grey = build_model("resnet18", num_classes=2, in_channels=1, weights=path)
    assert torch.allclose(grey.conv1.weight, source.conv1.weight, atol=1e-6)


def test_local_weights_of_another_architecture_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "r34.pth"
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), path)
    with pytest.raises(CheckpointError, match="r34.pth"):
        build_model("resnet18", num_classes=2, weights=path)
    with pytest.raises(ConfigError, match="no such file"):
        build_model("resnet18", num_classes=2, weights=tmp_path / "missing.pth")


# ---------------------------------------------------------------- ordinal head

def test_ordinal_head_gives_ordered_probabilities() -> None:
    torch.manual_seed(0)
    head = OrdinalHead(16, 5)
    features = torch.randn(64, 16) * 5
    log_probs = head(features)
    probs = log_probs.exp()
    assert torch.allclose(probs.sum(1), torch.ones(64), atol=1e-5)
    assert torch.allclose(log_probs.softmax(1), probs, atol=1e-6)   # consumers' softmax is a no-op
    assert (head.thresholds().diff() > 0).all()
    # A higher score moves mass to higher grades: the expected grade rises with the score.
    order = head.linear(features)[:, 0].argsort()
    assert (head.expected_grade(features)[order].diff() >= -1e-5).all()


def test_ordinal_head_trains_with_cross_entropy_and_round_trips() -> None:
    torch.manual_seed(0)
    model = build_model("resnet_tiny", num_classes=4, in_channels=1, head="ordinal")
    assert isinstance(model.fc, OrdinalHead) and classifier_layer(model) is model.fc.linear
    x, y = torch.rand(8, 1, 16, 16), torch.tensor([0, 1, 2, 3] * 2)
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    assert torch.isfinite(loss) and model.fc.threshold_gaps.grad is not None
    rebuilt = model_from_meta({"arch": "resnet_tiny", "num_classes": 4, "in_channels": 1,
                               "small_input_stem": False, "head": "ordinal"})
    load_weights(rebuilt, model.state_dict(), path="best.pt")
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(x), model.eval()(x))


def test_head_auto_is_the_softmax_head_and_the_cumulative_link_head_is_asked_for() -> None:
    # Graded tasks get their order from the loss (train.resolve_loss), not from the head.
    assert resolve_head("auto", "ordinal") == "linear"
    assert resolve_head("auto", "multiclass") == "linear"
    assert resolve_head("ordinal", "ordinal") == "ordinal"
    assert resolve_head("linear", "ordinal") == "linear"


def test_pretrained_loads_from_the_cache(torch_home: Path) -> None:
    torch.manual_seed(0)
    reference = torchvision.models.resnet18(weights=None).state_dict()
    path = weights_cache_path("resnet18")
    path.parent.mkdir(parents=True)
    torch.save(reference, path)
    grey = build_model("resnet18", num_classes=2, in_channels=1, pretrained=True)
    assert torch.equal(grey.conv1.weight, reference["conv1.weight"].sum(dim=1, keepdim=True))
    assert torch.equal(grey.layer3[1].conv2.weight, reference["layer3.1.conv2.weight"])
    assert grey.fc.out_features == 2
    rgb_small = build_model("resnet18", num_classes=3, in_channels=3, small_input_stem=True,
                            pretrained=True, freeze_backbone=True)
    assert torch.equal(rgb_small.layer4[1].bn2.running_var, reference["layer4.1.bn2.running_var"])
    # The new 3x3 stem is random, so it trains along with the head.
    assert rgb_small.conv1.weight.requires_grad and not rgb_small.layer1[0].conv1.weight.requires_grad


def test_pretrained_densenet_accepts_legacy_key_names(torch_home: Path) -> None:
    reference = torchvision.models.densenet121(weights=None).state_dict()
    # Old checkpoints say "norm.1" / "conv.2" and predate BatchNorm's num_batches_tracked.
    legacy = {k.replace(".norm1.", ".norm.1.").replace(".conv2.", ".conv.2."): v
              for k, v in reference.items() if not k.endswith("num_batches_tracked")}
    assert legacy.keys() != reference.keys()
    path = weights_cache_path("densenet121")
    path.parent.mkdir(parents=True)
    torch.save(legacy, path)
    model = build_model("densenet121", num_classes=2, in_channels=3, pretrained=True)
    key = "features.denseblock2.denselayer3.conv2.weight"
    assert torch.equal(model.state_dict()[key], reference[key])


# ---------------------------------------------------------------- checkpoint meta

def _meta(**changes: object) -> dict[str, object]:
    meta: dict[str, object] = {"arch": "resnet18", "num_classes": 2, "in_channels": 1,
                               "small_input_stem": True, "dropout": 0.0}
    meta.update(changes)
    return meta


def test_model_from_meta_round_trip() -> None:
    source = build_model("resnet18", num_classes=2, in_channels=1, small_input_stem=True)
    rebuilt = model_from_meta(_meta())
    load_weights(rebuilt, source.state_dict(), path="best.pt")
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(source.eval()(x), rebuilt.eval()(x))


@pytest.mark.parametrize("changes", [{"num_classes": 3}, {"arch": "resnet34"},
                                     {"in_channels": 3}, {"small_input_stem": False}])
def test_load_weights_mismatch_names_the_file(changes: dict[str, object]) -> None:
    source = build_model("resnet18", num_classes=2, in_channels=1, small_input_stem=True)
    other = model_from_meta(_meta(**changes))
    with pytest.raises(CheckpointError, match="runs/x/best.pt"):
        load_weights(other, source.state_dict(), path="runs/x/best.pt")


def test_model_from_meta_rejects_incomplete_meta() -> None:
    with pytest.raises(CheckpointError, match="in_channels"):
        model_from_meta({"arch": "resnet18", "num_classes": 2, "small_input_stem": True},
                        path="best.pt")
    with pytest.raises(CheckpointError, match="best.pt"):
        model_from_meta(_meta(arch="alexnet"), path="best.pt")


@pytest.mark.parametrize("arch, size, small, expected", [
    ("resnet18", 224, False, "layer4"),      # 7x7: the usual choice
    ("resnet18", 32, True, "layer3"),        # layer4 would be 4x4
    ("resnet18", 64, False, "layer2"),       # standard stem: layer4 2x2, layer3 4x4
    ("resnet_tiny", 28, True, "layer3"),     # 28 -> 28, 14, 7, 4
    ("resnet18", 160, False, "layer3"),      # the wbc recipe: layer4 5x5, layer3 10x10
    ("resnet18", 192, False, "layer3"),      # the auto recipe on wbc: layer4 6x6, layer3 12x12
    ("densenet121", 224, False, "features.norm5"),
    ("densenet121", 32, True, "features.denseblock3"),
])
def test_cam_layer_keeps_a_usable_grid(arch, size, small, expected):
    model = build_model(arch, num_classes=2, in_channels=1, small_input_stem=small)
    assert cam_target_layer(model, input_size=size, in_channels=1)[1] == expected
    assert model.training  # the probe forward leaves the mode as it was


# ---------------------------------------------------------------- architecture summary

@pytest.mark.parametrize("arch", ARCHS)
def test_architecture_summary_covers_every_parameter_and_flop(arch: str) -> None:
    from xreport.models import architecture_summary

    with torch.device("meta"):  # shapes and counts without the cost of real maths
        model = build_model(arch, num_classes=3, in_channels=1, small_input_stem=False)
        summary = architecture_summary(model, 64, 1)
        flops = count_flops(model, 64, 1)
    stages = summary["stages"]
    assert stages[0]["name"] == "stem" and stages[-1]["name"] == "head"
    assert stages[-1]["out_shape"] == [3]
    # Every weight and every FLOP sits in exactly one stage.
    assert sum(s["params"] for s in stages) == summary["params"] == count_parameters(model)["total"]
    assert sum(s["flops"] for s in stages) == summary["flops"] == flops
    # Each stage's output feeds the next: the spatial side never grows.
    sides = [s["out_shape"][-1] for s in stages[:-1]]
    assert sides == sorted(sides, reverse=True) and sides[0] == 16   # 7x7/2 conv + max-pool
    assert model.training                                               # left as it was
    if arch.startswith("densenet"):
        blocks = {int(n.removeprefix("denseblock")): s["blocks"] for s in stages
                  if (n := s["name"]).startswith("denseblock")}
        assert blocks == {i: len(getattr(model.features, f"denseblock{i}")) for i in range(1, 5)}
        assert [s["block"] for s in stages[1:3]] == ["dense_layer", "transition"]
    else:
        assert [s["blocks"] for s in stages[1:5]] == [len(getattr(model, f"layer{i}")) for i in range(1, 5)]
        assert stages[4]["out_shape"][0] == classifier_layer(model).in_features


def test_block_structure_is_read_from_the_real_layers() -> None:
    from xreport.models import architecture_summary

    with torch.device("meta"):
        r50 = architecture_summary(build_model("resnet50", num_classes=2), 64, 3)
        tiny = architecture_summary(build_model("resnet_tiny", num_classes=2, small_input_stem=True), 28, 3)
        dense = architecture_summary(build_model("densenet121", num_classes=2), 64, 3)
    (bottleneck,) = r50["blocks"]
    convs = [(s["kernel"], s["in_channels"], s["out_channels"]) for s in bottleneck["steps"] if s["op"] == "conv"]
    assert bottleneck["kind"] == "bottleneck" and bottleneck["module"] == "layer1.0"
    assert convs == [(1, 64, 64), (3, 64, 64), (1, 64, 256)]          # 1x1 - 3x3 - 1x1, expansion 4
    assert [s["op"] for s in bottleneck["shortcut"]] == ["conv", "norm"]   # 64 -> 256 projection
    assert [s["op"] for s in bottleneck["after_merge"]] == ["relu"] and bottleneck["merge"] == "add"
    assert bottleneck["count"] == 16 and bottleneck["out_shape"] == [256, 16, 16]
    (basic,) = tiny["blocks"]
    assert basic["kind"] == "basic" and basic["shortcut"] == [] and basic["count"] == 4
    assert [s["op"] for s in basic["steps"]] == ["conv", "norm", "relu", "conv", "norm"]
    # resnet_tiny is 8 channels wide where resnet18 is 64: the widths come from the module.
    assert {(s["kernel"], s["in_channels"], s["out_channels"]) for s in basic["steps"] if s["op"] == "conv"} == {(3, 8, 8)}
    assert tiny["stages"][0]["out_shape"] == [8, 28, 28]   # small stem: no downsampling
    (layer,) = dense["blocks"]
    assert layer["kind"] == "dense_layer" and layer["merge"] == "concat" and layer["growth_rate"] == 32
    assert [s["op"] for s in layer["steps"]] == ["norm", "relu", "conv", "norm", "relu", "conv"]
    assert [(s["kernel"], s["out_channels"]) for s in layer["steps"] if s["op"] == "conv"] == [(1, 128), (3, 32)]
    assert layer["in_shape"] == [64, 16, 16] and layer["count"] == 58
