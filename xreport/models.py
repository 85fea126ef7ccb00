"""Architecture registry: torchvision ResNets and DenseNet-121 adapted to the run's input.

``build_model`` gives a model for any class count, 1 or 3 input channels, and an optional
small-input stem (3x3 stride-1 first conv, no max-pool) so that 28-64 px images keep their
spatial detail, and a linear or ordinal (cumulative-link) head. Pretrained ImageNet weights
come through torch hub (its cache, else its checksum-checked download, only when asked for
with ``pretrained``), or from a local state_dict file.
"""
from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypedDict
from urllib.parse import urlparse

import torch
import torchvision
import torch.nn.functional as F
from torch import nn

from .artifacts import (ArchitectureSummary, BlockKind, BlockStructure, LayerOp,  # noqa: F401 (the schema, in artifacts)
                        LayerStep, StageRow)
from .config import ARCHS
from .errors import CheckpointError, ConfigError, OfflineError

if TYPE_CHECKING:
    from .artifacts import CheckpointMeta

logger = logging.getLogger(__name__)

SMALL_STEM_BELOW = 96  # px: "auto" turns the small stem on below this input size

# Old torchvision DenseNet checkpoints name layers "norm.1"; the modules are now "norm1".
_DENSENET_OLD_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


def _check_arch(arch: str) -> None:
    if arch not in ARCHS:
        raise ConfigError(f"model.arch {arch!r} is not one of {', '.join(ARCHS)}")


def _unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside DistributedDataParallel / DataParallel wrappers."""
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


def is_densenet(model: nn.Module) -> bool:
    return isinstance(_unwrap(model), torchvision.models.DenseNet)


# ---------------------------------------------------------------- pretrained weights

def weights_url(arch: str) -> str:
    """The download URL of torchvision's default ImageNet weights for ``arch``."""
    _check_arch(arch)
    return torchvision.models.get_model_weights(arch).DEFAULT.url


def weights_cache_path(arch: str) -> Path:
    """Where torch hub keeps the weights file: ``torch.hub.get_dir()/checkpoints/<name>``."""
    name = Path(urlparse(weights_url(arch)).path).name
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def _normalise_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip DDP's ``module.`` prefix and rename old DenseNet keys ("norm.1" -> "norm1")."""
    return {_DENSENET_OLD_KEY.sub(r"\1\2", k.removeprefix("module.")): v for k, v in state.items()}


def load_pretrained_state_dict(arch: str) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet weights through torch hub: the cached file when present, else
    torch's own download into the cache (the hash in the file name is checked).

    Offline without the file: ``OfflineError`` saying where to put it."""
    from .runs import load_tensor_file

    url, path = weights_url(arch), weights_cache_path(arch)
    if not path.is_file():
        match = torch.hub.HASH_REGEX.search(path.name)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(url, str(path), hash_prefix=match.group(1) if match else None,
                                           progress=False)
        except (OSError, RuntimeError, ValueError) as exc:   # URLError is an OSError; hash mismatch
            raise OfflineError(f"pretrained weights for {arch} not found at {path} and the download "
                               f"failed ({type(exc).__name__}); download {url} to that path where a "
                               "network exists, or set model.weights to a local state_dict file") from None
    # The cached file is read like any file from outside: bounded, weights only, mapped.
    try:
        state = load_tensor_file(path, what="weights file")
    except CheckpointError as exc:
        raise CheckpointError(f"{exc}; delete it and download {url} again") from None
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path}: not a state_dict of {arch}")
    return _normalise_keys(state)


def load_weights_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A local torchvision-compatible state_dict (``model.weights``); a dict that wraps it
    under "state_dict" or "model" (common training-script checkpoints) is unwrapped."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"model.weights {str(path)!r}: no such file")
    from .runs import load_tensor_file

    state = load_tensor_file(path, what="state_dict")     # bounded, weights only, mapped
    for key in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: not a state_dict (a mapping of names to tensors)")
    return _normalise_keys(state)


def _require_keys(expected: list[str], state: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor], *,
                  where: str) -> None:
    """``CheckpointError`` naming ``where`` when ``state`` lacks an expected key or has extra ones."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        sample = (missing or unexpected)[:3]
        raise CheckpointError(f"{where}: weights do not fit this architecture "
                              f"({len(missing)} missing, {len(unexpected)} unexpected keys, "
                              f"e.g. {', '.join(sample)})")


def _load_backbone(model: nn.Module, state: Mapping[str, torch.Tensor], *, source: str) -> None:
    """Load every backbone weight of ``state``; the classifier is left out (it is replaced)
    and a 1-channel first conv is spread over RGB (the stem is adapted afterwards)."""
    head = _head_attr(model) + "."
    own = model.state_dict()
    stem_key = ("features.conv0.weight" if is_densenet(model) else "conv1.weight")
    state = {k: v for k, v in state.items() if not k.startswith(head)}
    stem = state.get(stem_key)
    if stem is not None and stem.dim() == 4 and stem.shape[1] == 1 and own[stem_key].shape[1] == 3:
        state[stem_key] = stem.repeat(1, 3, 1, 1) / 3
    # Old files predate BatchNorm's num_batches_tracked; it is only a counter.
    _require_keys([k for k in own if not k.startswith(head) and not k.endswith("num_batches_tracked")],
                  state, own, where=source)
    for key in state:
        if tuple(state[key].shape) != tuple(own[key].shape):
            raise CheckpointError(f"{source}: {key} has shape {tuple(state[key].shape)} but the "
                                  f"model needs {tuple(own[key].shape)} (another architecture?)")
    model.load_state_dict(state, strict=False)


def stem_from_state(arch: str, state: Mapping[str, torch.Tensor], *, source: str) -> tuple[int, bool]:
    """(input channels, small-input stem) of a state_dict's first conv: a 3x3 kernel is the
    small stem (3x3 stride 1, no max-pool), a 7x7 the standard one."""
    key = "features.conv0.weight" if arch.startswith("densenet") else "conv1.weight"
    weight = state.get(key)
    if weight is None or weight.dim() != 4:
        raise CheckpointError(f"{source}: no first convolution {key} (4-D); not a torchvision {arch} state_dict")
    channels, kernel = int(weight.shape[1]), int(weight.shape[-1])
    if channels not in (1, 3) or kernel not in (3, 7):
        raise CheckpointError(f"{source}: {key} has shape {tuple(weight.shape)}; {arch} here takes 1 or "
                              "3 input channels and a 7x7 (standard) or 3x3 (small-input) stem")
    return channels, kernel == 3


def load_trained_weights(model: nn.Module, state: Mapping[str, torch.Tensor], *, source: str) -> None:
    """A whole trained model's weights (classifier included) into ``model``: a missing or
    unexpected key names a few of them, a classifier for another class count names the layer
    and both shapes, any other shape mismatch names its layer."""
    own = model.state_dict()
    # Older files predate BatchNorm's num_batches_tracked; it is only a counter.
    _require_keys([k for k in own if not k.endswith("num_batches_tracked")], state, own, where=source)
    head = _head_attr(model)
    for key in (f"{head}.weight", f"{head}.bias"):   # checked first: the usual mismatch
        tensor = own.get(key)
        if tensor is not None and key in state and tuple(state[key].shape) != tuple(tensor.shape):
            raise CheckpointError(f"{source}: classifier {key} has shape {tuple(state[key].shape)} "
                                  f"({state[key].shape[0]} classes) but the data have {tensor.shape[0]} "
                                  f"classes (shape {tuple(tensor.shape)})")
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(own[key].shape):
            raise CheckpointError(f"{source}: {key} has shape {tuple(tensor.shape)} but the model "
                                  f"needs {tuple(own[key].shape)} (another architecture or stem?)")
    model.load_state_dict(state, strict=False)


# ---------------------------------------------------------------- building

TINY_ARCH = "resnet_tiny"
TINY_WIDTHS = (8, 16, 32, 64)


def _tiny_resnet() -> nn.Module:
    """A torchvision ResNet with one BasicBlock per stage and widths 8-64 (~80k weights).

    For fixture checkpoints and smoke runs that must stay in kilobytes; it is a real ResNet
    (same modules, same CAM layer), just narrow. Not a model for real data.
    """
    from torchvision.models.resnet import BasicBlock, ResNet

    model = ResNet(BasicBlock, [1, 1, 1, 1])
    w0 = TINY_WIDTHS[0]
    model.conv1 = nn.Conv2d(3, w0, kernel_size=7, stride=2, padding=3, bias=False)
    model.bn1 = nn.BatchNorm2d(w0)
    model.inplanes = w0
    model.layer1 = model._make_layer(BasicBlock, TINY_WIDTHS[0], 1)
    model.layer2 = model._make_layer(BasicBlock, TINY_WIDTHS[1], 1, stride=2)
    model.layer3 = model._make_layer(BasicBlock, TINY_WIDTHS[2], 1, stride=2)
    model.layer4 = model._make_layer(BasicBlock, TINY_WIDTHS[3], 1, stride=2)
    model.fc = nn.Linear(TINY_WIDTHS[3], 1000)
    return model


def resolve_small_stem(setting: Literal["auto", "on", "off"] | str, image_size: int) -> bool:
    """``auto`` turns the small-input stem on below 96 px (ImageNet stems shrink 4x at once)."""
    if setting == "auto":
        return image_size < SMALL_STEM_BELOW
    if setting in ("on", "off"):
        return setting == "on"
    raise ConfigError(f"model.small_input_stem {setting!r} is not one of auto, on, off")


def _first_conv(model: nn.Module) -> tuple[nn.Module, str, nn.Conv2d]:
    """(parent module, attribute name, conv) of the stem convolution."""
    parent, attr = (model.get_submodule("features"), "conv0") if is_densenet(model) else (model, "conv1")
    conv = parent.get_submodule(attr)
    if not isinstance(conv, nn.Conv2d):
        raise ConfigError(f"{type(model).__name__}.{attr} is not a convolution; cannot adapt its stem")
    return parent, attr, conv


def _replace_stem(model: nn.Module, *, in_channels: int, small: bool) -> bool:
    """Adapt the first conv (and pool) in place; True when the conv was re-initialised."""
    parent, attr, old = _first_conv(model)
    if small:
        setattr(parent, attr, nn.Conv2d(in_channels, old.out_channels, 3, 1, 1, bias=False))
        if is_densenet(model):
            setattr(model.get_submodule("features"), "pool0", nn.Identity())
        else:
            model.maxpool = nn.Identity()
        return True
    if in_channels == old.in_channels:
        return False
    # A 2-d convolution's sizes are pairs (Conv2d stores them as tuple[int, ...]).
    k, s, p = old.kernel_size, old.stride, old.padding
    new = nn.Conv2d(in_channels, old.out_channels, (k[0], k[1]), (s[0], s[1]),
                    p if isinstance(p, str) else (p[0], p[1]), bias=False)
    if in_channels == 1:
        # Summing the RGB kernels keeps the response to a grey image equal to the RGB one.
        with torch.no_grad():
            new.weight.copy_(old.weight.sum(dim=1, keepdim=True))
        setattr(parent, attr, new)
        return False
    setattr(parent, attr, new)
    return True


def _head_attr(model: nn.Module) -> str:
    return "classifier" if is_densenet(model) else "fc"


HEADS = ("linear", "ordinal")


class OrdinalHead(nn.Module):
    """Cumulative-link (proportional-odds) head for ordered grades 0..K-1.

    One score ``s = w.x + b`` and K-1 increasing thresholds ``t_k`` (a first one plus
    softplus gaps, so the order holds by construction): ``P(y > k) = sigmoid(s - t_k)``.
    The output is the log of the K class probabilities, so a softmax of it returns them
    unchanged: every consumer of logits (predict, metrics, CAMs) works as for a linear head,
    and cross-entropy on it is the model's negative log-likelihood.
    """

    def __init__(self, in_features: int, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        if num_classes < 2:
            raise ConfigError(f"an ordinal head needs at least 2 grades, got {num_classes}")
        self.num_classes = num_classes
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.linear = nn.Linear(in_features, 1)
        self.first_threshold = nn.Parameter(torch.empty(1))
        self.threshold_gaps = nn.Parameter(torch.empty(num_classes - 2))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Thresholds one unit apart around 0 (softplus(0.5413) = 1)."""
        self.linear.reset_parameters()
        with torch.no_grad():
            self.first_threshold.fill_(-(self.num_classes - 2) / 2)
            self.threshold_gaps.fill_(0.5413)

    def thresholds(self) -> torch.Tensor:
        gaps = F.softplus(self.threshold_gaps.float())
        return self.first_threshold.float() + torch.cat([gaps.new_zeros(1), gaps.cumsum(0)])

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        score = self.linear(self.dropout(features)).float()            # (B, 1)
        above = score - self.thresholds()                              # logit of P(y > k)
        inf = above.new_full((above.shape[0], 1), math.inf)
        upper = torch.cat([inf, above], dim=1)    # logit of P(y > k-1); +inf for grade 0
        lower = torch.cat([above, -inf], dim=1)   # logit of P(y > k);   -inf for the top grade
        # log(sigmoid(u) - sigmoid(l)) = logsig(u) + logsig(-l) + log(1 - exp(l - u)), stable.
        gap = (-torch.expm1(lower - upper)).clamp_min(1e-12)
        return F.logsigmoid(upper) + F.logsigmoid(-lower) + gap.log()

    def expected_grade(self, features: torch.Tensor) -> torch.Tensor:
        """Mean grade under the predicted distribution (for regression-style summaries)."""
        probs = self.forward(features).exp()
        return (probs * torch.arange(self.num_classes, device=probs.device)).sum(1)


def resolve_head(setting: str, task: str) -> str:
    """``auto``: a linear softmax head for every task. Graded (ordinal) tasks get their ordering
    from the loss (``train.resolve_loss``): on RetinaMNIST, soft ordinal labels on a softmax
    head did better than this cumulative-link head (BENCHMARKS.md, zoo)."""
    if setting == "auto":
        return "linear"
    if setting in HEADS:
        return setting
    raise ConfigError(f"model.head {setting!r} is not one of auto, {', '.join(HEADS)}")


def _replace_head(model: nn.Module, *, num_classes: int, dropout: float, head: str = "linear") -> None:
    attr = _head_attr(model)
    in_features = classifier_layer(model).in_features
    if head == "ordinal":
        setattr(model, attr, OrdinalHead(in_features, num_classes, dropout))
        return
    linear = nn.Linear(in_features, num_classes)
    setattr(model, attr, nn.Sequential(nn.Dropout(dropout), linear) if dropout > 0 else linear)


def _freeze_backbone(model: nn.Module, *, keep_stem: bool) -> None:
    """Only the head trains; a stem that had to be re-initialised trains too (it is random)."""
    for param in model.parameters():
        param.requires_grad_(False)
    for param in getattr(model, _head_attr(model)).parameters():
        param.requires_grad_(True)
    if keep_stem:
        for param in _first_conv(model)[2].parameters():
            param.requires_grad_(True)


def build_model(arch: str, *, num_classes: int, in_channels: int = 3,
                small_input_stem: bool = False, dropout: float = 0.0, pretrained: bool = False,
                freeze_backbone: bool = False, weights: str | Path = "",
                head: str = "linear") -> nn.Module:
    """A torchvision ResNet/DenseNet for ``num_classes`` and 1- or 3-channel input.

    With ``pretrained`` torchvision's ImageNet weights come from the torch hub cache, or are
    downloaded into it (torch's checksum-checked download); ``weights`` names a local
    torchvision-compatible state_dict instead. Either way the classifier is new, a 1-channel
    stem gets the RGB kernels summed and a small-input stem is new and random. ``head``
    "ordinal" puts an ``OrdinalHead`` where the linear classifier was. With
    ``freeze_backbone`` only the head (plus a re-initialised stem) has ``requires_grad``.
    """
    _check_arch(arch)
    if in_channels not in (1, 3):
        raise ConfigError(f"in_channels must be 1 or 3, got {in_channels}")
    if num_classes < 2:
        raise ConfigError(f"num_classes must be at least 2, got {num_classes}")
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"model.dropout must be in [0, 1), got {dropout}")
    if arch == TINY_ARCH and pretrained:
        raise ConfigError(f"model.arch {TINY_ARCH} has no pretrained weights")
    if head not in HEADS:
        raise ConfigError(f"model.head {head!r} is not one of {', '.join(HEADS)}")
    model = _tiny_resnet() if arch == TINY_ARCH else torchvision.models.get_model(arch, weights=None)
    if weights:
        _load_backbone(model, load_weights_file(weights), source=str(weights))
    elif pretrained:
        _load_backbone(model, load_pretrained_state_dict(arch), source=str(weights_cache_path(arch)))
    started = bool(weights) or pretrained
    reinitialised = _replace_stem(model, in_channels=in_channels, small=small_input_stem)
    if started and reinitialised:
        logger.info("%s: the stem conv is new (small-input stem or channel change) and starts "
                    "random; the rest is pretrained", arch)
    _replace_head(model, num_classes=num_classes, dropout=dropout, head=head)
    if freeze_backbone:
        _freeze_backbone(model, keep_stem=started and reinitialised)
    return model


def set_train_mode(model: nn.Module, *, freeze_backbone: bool) -> None:
    """``model.train()``, but a frozen backbone keeps its BatchNorm statistics fixed."""
    model.train()
    if not freeze_backbone:
        return
    for module in _unwrap(model).modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not any(
                p.requires_grad for p in module.parameters()):
            module.eval()


# ---------------------------------------------------------------- introspection

# A CAM is only as fine as its layer's grid: below this many cells a side (layer4 of a
# 28-64 px input is 1-4 cells) the upsampled map cannot point at a lesion, so a shallower
# stage is used. 7 keeps layer4 / norm5 for the usual 224 px input.
MIN_CAM_GRID = 7


def _cam_candidates(bare: nn.Module) -> list[tuple[nn.Module, str]]:
    """Candidate CAM layers, deepest first."""
    if is_densenet(bare):
        return [(bare.get_submodule(name), name)
                for name in ("features.norm5", "features.denseblock3", "features.denseblock2")]
    if isinstance(bare, torchvision.models.ResNet):
        return [(bare.layer4[-1], "layer4"), (bare.layer3[-1], "layer3"), (bare.layer2[-1], "layer2")]
    raise ConfigError(f"no CAM target layer known for {type(bare).__name__}; "
                      f"supported: {', '.join(ARCHS)}")


def cam_target_layer(model: nn.Module, *, input_size: int | None = None,
                     in_channels: int | None = None) -> tuple[nn.Module, str]:
    """The layer CAMs are taken from.

    ResNet ``layer4[-1]`` and DenseNet ``features.norm5`` by default; given the input size,
    the deepest stage whose feature map is at least ``MIN_CAM_GRID`` cells a side.
    """
    bare = _unwrap(model)
    candidates = _cam_candidates(bare)
    if input_size is None:
        return candidates[0]
    sizes = _feature_sizes(bare, [m for m, _ in candidates], input_size=input_size,
                           in_channels=in_channels or _first_conv(bare)[2].in_channels)
    for (module, name), side in zip(candidates, sizes):
        if side >= MIN_CAM_GRID:
            return module, name
    return candidates[-1]


def _feature_sizes(model: nn.Module, modules: list[nn.Module], *, input_size: int,
                   in_channels: int) -> list[int]:
    """Spatial side of each module's output for one input, from a meta-device forward."""
    sizes: dict[int, int] = {}
    hooks = [m.register_forward_hook(lambda mod, _in, out, i=i: sizes.__setitem__(i, out.shape[-1]))
             for i, m in enumerate(modules)]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            device = next(model.parameters()).device
            model(torch.zeros(1, in_channels, input_size, input_size, device=device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return [sizes[i] for i in range(len(modules))]


def classifier_layer(model: nn.Module) -> nn.Linear:
    """The final Linear (its weights give fc-weight CAMs; an ordinal head's score layer)."""
    head = getattr(_unwrap(model), _head_attr(_unwrap(model)))
    if isinstance(head, OrdinalHead):
        return head.linear
    if isinstance(head, nn.Sequential):
        head = [m for m in head if isinstance(m, nn.Linear)][-1]
    if not isinstance(head, nn.Linear):
        raise ConfigError(f"classifier head is {type(head).__name__}, not a Linear layer")
    return head


def count_parameters(model: nn.Module) -> dict[str, int]:
    params = list(_unwrap(model).parameters())
    return {"total": sum(p.numel() for p in params),
            "trainable": sum(p.numel() for p in params if p.requires_grad)}


def _counted_forward(model: nn.Module, input_size: int, in_channels: int, *,
                     hooks: Mapping[nn.Module, Callable[[nn.Module, object, object], None]] | None = None,
                     ) -> tuple[int, dict[str, int]]:
    """One eval-mode, no-grad forward pass of a zero image under ``FlopCounterMode``, with
    forward ``hooks`` attached for its duration: (total FLOPs, FLOPs per module path).

    Module paths are the model's own names ("layer1", "features.denseblock1"); the
    per-module FLOPs include the module's children.
    """
    from torch.utils.flop_counter import FlopCounterMode

    bare = _unwrap(model)
    param = next(bare.parameters())
    x = torch.zeros(1, in_channels, input_size, input_size, device=param.device, dtype=param.dtype)
    handles = [m.register_forward_hook(fn) for m, fn in (hooks or {}).items()]
    was_training = bare.training
    bare.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            bare(x)
    finally:
        for h in handles:
            h.remove()
        bare.train(was_training)
    # FlopCounterMode names modules "<ClassName>.<path>"; keep the path alone.
    root = type(bare).__name__ + "."
    per_module = {name.removeprefix(root): int(sum(ops.values()))
                  for name, ops in counter.get_flop_counts().items() if name.startswith(root)}
    return int(counter.get_total_flops()), per_module


def count_flops(model: nn.Module, input_size: int, in_channels: int) -> int:
    """FLOPs of one forward pass of one ``in_channels x input_size x input_size`` image.

    Counted by ``torch.utils.flop_counter.FlopCounterMode``, which counts a multiply-add as
    TWO FLOPs (convolutions and matmuls only). Papers and torchvision's model table quote
    multiply-adds (MACs): divide by 2 to compare (ResNet-18 at 224 px: ~3.64e9 here,
    1.82 "GFLOPS" in torchvision's table).
    """
    return _counted_forward(model, input_size, in_channels)[0]


# ---------------------------------------------------------------- architecture summary

# The block kinds whose structure the report draws (a transition is a stage, not a block type).
DRAWN_BLOCKS: tuple[BlockKind, ...] = ("basic", "bottleneck", "dense_layer")


def _block_kind(module: nn.Module) -> BlockKind | None:
    from torchvision.models import densenet, resnet

    if isinstance(module, resnet.BasicBlock):
        return "basic"
    if isinstance(module, resnet.Bottleneck):
        return "bottleneck"
    if isinstance(module, densenet._DenseLayer):
        return "dense_layer"
    if isinstance(module, densenet._Transition):
        return "transition"
    return None


def _stages(bare: nn.Module) -> list[tuple[str, str, list[tuple[str, nn.Module]]]]:
    """(stage name, module path, [(path, module)] whose parameters it holds; the last
    module's output is the stage's output)."""
    def named(prefix: str, parent: nn.Module, *attrs: str) -> list[tuple[str, nn.Module]]:
        return [(f"{prefix}{a}", parent.get_submodule(a)) for a in attrs]

    head = _head_attr(bare)
    if is_densenet(bare):
        f = bare.get_submodule("features")
        stages = [("stem", "features.conv0", named("features.", f, "conv0", "norm0", "relu0", "pool0"))]
        stages += [(name, f"features.{name}", [(f"features.{name}", child)])
                   for name, child in f.named_children() if name.startswith(("denseblock", "transition"))]
        stages.append(("head", head, named("features.", f, "norm5") + [(head, bare.get_submodule(head))]))
        return stages
    if isinstance(bare, torchvision.models.ResNet):
        stages = [("stem", "conv1", named("", bare, "conv1", "bn1", "relu", "maxpool"))]
        stages += [(f"layer{i}", f"layer{i}", named("", bare, f"layer{i}")) for i in range(1, 5)]
        stages.append(("head", head, named("", bare, "avgpool", head)))
        return stages
    raise ConfigError(f"no architecture summary known for {type(bare).__name__}; "
                      f"supported: {', '.join(ARCHS)}")


def _shape(out: object) -> list[int]:
    tensor = out[0] if isinstance(out, (tuple, list)) else out
    return [int(s) for s in tensor.shape[1:]] if isinstance(tensor, torch.Tensor) else []


def _side(value: object) -> int | None:
    first = value[0] if isinstance(value, tuple) else value
    return int(first) if isinstance(first, (int, float)) else None


def _step_recorder(steps: list[LayerStep], path: str) -> Callable[[nn.Module, object, object], None]:
    """A forward hook appending the layer's step to ``steps`` (its block's list)."""
    def record(module: nn.Module, _inputs: object, out: object) -> None:
        steps.append(_step(path, module, out))
    return record


def _step(path: str, module: nn.Module, out: object) -> LayerStep:
    op: LayerOp = "other"
    kernel = stride = cin = cout = None
    if isinstance(module, nn.Conv2d):
        op, kernel, stride = "conv", _side(module.kernel_size), _side(module.stride)
        cin, cout = module.in_channels, module.out_channels
    elif isinstance(module, nn.modules.batchnorm._BatchNorm):
        op, cin = "norm", module.num_features
        cout = cin
    elif isinstance(module, nn.ReLU):
        op = "relu"
    elif isinstance(module, (nn.AvgPool2d, nn.MaxPool2d)):
        op, kernel, stride = "pool", _side(module.kernel_size), _side(module.stride)
    elif isinstance(module, nn.Linear):
        op, cin, cout = "linear", module.in_features, module.out_features
    return {"module": path, "op": op, "kernel": kernel, "stride": stride, "in_channels": cin,
            "out_channels": cout, "out_shape": _shape(out)}


def architecture_summary(model: nn.Module, input_size: int, in_channels: int) -> ArchitectureSummary:
    """The model's stages (block type, block count, output C x H x W at ``input_size``,
    parameters, FLOPs) and the layers of its first block of each kind, all from ONE forward
    pass of a zero image with hooks (no grad): what the report's architecture table and
    block diagram show. FLOPs as ``count_flops`` counts them.
    """
    bare = _unwrap(model)
    stages = _stages(bare)
    names = {m: n for n, m in bare.named_modules()}
    out_shapes: dict[str, list[int]] = {}
    firsts: dict[BlockKind, tuple[str, nn.Module]] = {}
    counts: dict[BlockKind, int] = {}
    for path, module in bare.named_modules():
        kind = _block_kind(module)
        if kind is not None:
            counts[kind] = counts.get(kind, 0) + 1
            firsts.setdefault(kind, (path, module))
    drawn = [(kind, path, block) for kind, (path, block) in firsts.items() if kind in DRAWN_BLOCKS]
    calls: dict[str, list[LayerStep]] = {path: [] for _, path, _ in drawn}
    in_shapes: dict[str, list[int]] = {}
    hooks: dict[nn.Module, Callable[[nn.Module, object, object], None]] = {}

    def keep_shape(path: str) -> Callable[[nn.Module, object, object], None]:
        return lambda _m, _in, out: out_shapes.__setitem__(path, _shape(out))

    for _, _, members in stages:
        path, module = members[-1]
        hooks[module] = keep_shape(path)
    for _, block_path, block in drawn:
        def record_block(_m: nn.Module, inputs: object, out: object, p: str = block_path) -> None:
            # A dense layer takes the list of earlier feature maps: its input is their concat.
            first = inputs[0] if isinstance(inputs, tuple) and inputs else inputs
            parts = first if isinstance(first, (list, tuple)) else [first]
            shapes = [_shape(x) for x in parts]
            in_shapes[p] = [sum(s[0] for s in shapes), *shapes[0][1:]] if shapes and shapes[0] else []
            out_shapes[p] = _shape(out)
        hooks[block] = record_block
        for sub_path, sub in block.named_modules(prefix=block_path):
            if sub is not block and not list(sub.children()):
                hooks[sub] = _step_recorder(calls[block_path], sub_path)
    total_flops, flops = _counted_forward(bare, input_size, in_channels, hooks=hooks)

    rows: list[StageRow] = []
    for name, path, members in stages:
        module = members[0][1]
        kinds = [k for child in module.children() if (k := _block_kind(child))] if len(members) == 1 else []
        own = _block_kind(module)
        rows.append({"name": name, "module": path,
                     "block": own or (kinds[0] if kinds else None),
                     "blocks": len(kinds) if kinds else 1,
                     "out_shape": out_shapes.get(members[-1][0], []),
                     "params": sum(p.numel() for _, m in members for p in m.parameters()),
                     "flops": sum(flops.get(names[m], 0) for _, m in members)})
    blocks = [_block_structure(kind, path, counts[kind], calls[path], in_shapes.get(path, []),
                               out_shapes.get(path, [])) for kind, path, _ in drawn]
    counted = count_parameters(bare)
    return {"family": "densenet" if is_densenet(bare) else "resnet", "input_size": int(input_size),
            "in_channels": int(in_channels), "stages": rows, "blocks": blocks,
            "params": counted["total"], "trainable": counted["trainable"], "flops": total_flops}


def _block_structure(kind: BlockKind, path: str, count: int, calls: list[LayerStep],
                     in_shape: list[int], out_shape: list[int]) -> BlockStructure:
    """Split a block's recorded layer calls into main path, shortcut and after-merge."""
    if kind == "dense_layer":
        convs = [s for s in calls if s["op"] == "conv"]
        return {"kind": kind, "module": path, "count": count, "in_shape": in_shape,
                "out_shape": out_shape, "steps": calls, "merge": "concat", "shortcut": [],
                "after_merge": [], "growth_rate": convs[-1]["out_channels"] if convs else None}
    shortcut = [s for s in calls if s["module"].startswith(f"{path}.downsample.")]
    main = [s for s in calls if s not in shortcut]
    # torchvision's blocks add the shortcut after the last BatchNorm, then apply ReLU.
    last_norm = max((i for i, s in enumerate(main) if s["op"] == "norm"), default=len(main) - 1)
    return {"kind": kind, "module": path, "count": count, "in_shape": in_shape, "out_shape": out_shape,
            "steps": main[:last_norm + 1], "merge": "add", "shortcut": shortcut,
            "after_merge": main[last_norm + 1:], "growth_rate": None}


# ---------------------------------------------------------------- checkpoints

_META_KEYS = ("arch", "num_classes", "in_channels", "small_input_stem")


def model_from_meta(meta: CheckpointMeta, *, path: str | Path | None = None) -> nn.Module:
    """The (untrained) model a checkpoint's meta describes; never loads ImageNet weights."""
    where = f"{path}: " if path is not None else ""
    missing = [k for k in _META_KEYS if k not in meta]
    if missing:
        raise CheckpointError(f"{where}checkpoint meta lacks {', '.join(missing)}; "
                              "it was not written by `xreport train`")
    try:
        return build_model(str(meta["arch"]), num_classes=int(meta["num_classes"]),
                           in_channels=int(meta["in_channels"]),
                           small_input_stem=bool(meta["small_input_stem"]),
                           dropout=float(meta.get("dropout", 0.0)), pretrained=False,
                           head=str(meta.get("head", "linear")))
    except ConfigError as exc:
        raise CheckpointError(f"{where}checkpoint meta describes no buildable model: {exc}") from None


def load_weights(model: nn.Module, state_dict: Mapping[str, torch.Tensor], *,
                 path: str | Path) -> None:
    """Load strictly; a mismatch (other architecture or class count) is a ``CheckpointError``."""
    bare = _unwrap(model)
    state = {k.removeprefix("module."): v for k, v in state_dict.items()}
    own = bare.state_dict()
    _require_keys(list(own), state, own, where=str(path))
    for key, tensor in own.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise CheckpointError(f"{path}: {key} has shape {tuple(state[key].shape)} in the "
                                  f"checkpoint but {tuple(tensor.shape)} in the model "
                                  "(another class count, channel count or architecture)")
    bare.load_state_dict(state)
