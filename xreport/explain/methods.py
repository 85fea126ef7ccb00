"""The CAM methods: one class each, in a registry (``register_cam_method``).

As in ``pytorch_grad_cam``, a method is a class whose hook weights the target layer's
channels (:class:`CamMethod`); whether it needs gradients is a flag, and Score-CAM's
weights are forward passes of the masked input. The CLI's ``--cam`` help, the option checks
(``build.check_report_options``, ``compute_cams``, ``viewer_maps``, ``explain_split``) and
both dispatches (one target per image: ``cams.compute_cams``; every class:
``cams.viewer_maps``) read the registry. A method's display name is ``cam.<name>`` in the
catalogs ``templates/i18n/<lang>/report.json`` (the report shows the name itself without one).
The formulas follow ``pytorch_grad_cam`` (tests/test_explain.py checks them against it).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError, ReportError
from .hooks import _final_linear, _to_device


@dataclass(frozen=True)
class CamBatch:
    """One batch as a CAM method sees it, after the forward pass."""

    model: nn.Module
    images: Tensor      # (B, c, H, W): the model's input, on the device
    acts: Tensor        # (B, C, h, w): the target layer's output, detached
    batch_size: int     # images per forward pass (Score-CAM's masked passes)


class CamMethod:
    """One CAM method: how the target layer's channels are weighted into a map.

    As in ``pytorch_grad_cam``, a method is a class with a weighting hook. A subclass sets
    ``name`` (the ``--cam`` value and the catalogs' ``cam.<name>`` key, its display name),
    ``needs_gradients`` (then the caller takes one backward pass through the head per
    target and passes ``grads``) and implements :meth:`weights`; the map is the weighted
    sum of the channels. :meth:`maps` is for a method that is no weighted sum (Eigen-CAM),
    :meth:`class_maps` for one that can weight every class at once (CAM, Score-CAM).
    Register it with :func:`register_cam_method`; the CLI, the option checks and both
    dispatches (:func:`compute_cams`, :func:`viewer_maps`) read the registry.
    """

    name: ClassVar[str] = ""
    needs_gradients: ClassVar[bool] = False

    def weights(self, batch: CamBatch, targets: Tensor, grads: Tensor | None) -> Tensor:
        """The channel weights of each image's target class: (B, C), or (B, C, h, w) for a
        method that weights every position. ``grads``: d(target logit)/d(activations),
        (B, C, h, w), when ``needs_gradients``, else None."""
        raise NotImplementedError(f"CAM method {self.name!r} defines no weights")

    def maps(self, batch: CamBatch, targets: Tensor, grads: Tensor | None) -> Tensor:
        """Unnormalised (B, h, w) maps of each image's target class."""
        return weighted_sum(self.weights(batch, targets, grads), batch.acts)

    def class_maps(self, batch: CamBatch, num_classes: int) -> Tensor:
        """Unnormalised (B, K, h, w) maps of every class (methods without gradients only:
        the viewer asks a gradient method class by class, one backward pass each)."""
        b = batch.acts.shape[0]
        return torch.stack([self.maps(batch, torch.full((b,), c, dtype=torch.long, device=batch.acts.device),
                                      None) for c in range(num_classes)], dim=1)


def weighted_sum(weights: Tensor, acts: Tensor) -> Tensor:
    """(B, h, w) sum of the channels of ``acts`` (B, C, h, w) weighted by (B, C) or (B, C, h, w)."""
    weights = weights.to(acts.dtype)
    if weights.dim() == 2:
        return torch.einsum("bc,bchw->bhw", weights, acts)
    return (weights * acts).sum(1)


DEFAULT_CAM_METHOD = "gradcam"  # --cam's default, and every API's
_REGISTRY: dict[str, CamMethod] = {}
_M = TypeVar("_M", bound=CamMethod)


def register_cam_method(cls: type[_M]) -> type[_M]:
    """Add a CAM method under ``cls.name`` (usable as a class decorator); registering the
    same class again is a no-op, another class under a taken name an error."""
    name = cls.name
    if not isinstance(name, str) or not name or name != name.strip() or "," in name:
        raise ValueError(f"{cls.__qualname__}.name must be a non-empty name without commas, got {name!r}")
    known = _REGISTRY.get(name)
    if known is not None and type(known) is not cls:
        raise ValueError(f"CAM method {name!r} is already registered by {type(known).__qualname__}")
    _REGISTRY[name] = cls()
    return cls


def cam_methods() -> tuple[str, ...]:
    """The registered method names, in registration order (``--cam``'s choices)."""
    return tuple(_REGISTRY)


def gradient_methods() -> tuple[str, ...]:
    """The registered methods that weight gradients."""
    return tuple(name for name, m in _REGISTRY.items() if m.needs_gradients)


def cam_method(name: str) -> CamMethod:
    """The registered method called ``name``; any other name is a one-line ConfigError."""
    found = _REGISTRY.get(name) if isinstance(name, str) else None
    if found is None:
        raise ConfigError(f"explain method {name!r} is not one of {', '.join(_REGISTRY)}")
    return found


_EPS = 1e-7  # XGrad-CAM's guard against an all-zero channel, as in pytorch_grad_cam


@register_cam_method
class GradCAM(CamMethod):
    """Grad-CAM (Selvaraju et al.): channel weight = the spatial mean of its gradient."""

    name = "gradcam"
    needs_gradients = True

    def weights(self, batch: CamBatch, targets: Tensor, grads: Tensor | None) -> Tensor:
        return _need(grads).mean(dim=(2, 3))


@register_cam_method
class GradCAMPlusPlus(CamMethod):
    """Grad-CAM++ (Chattopadhay et al., eq. 19), as in pytorch_grad_cam."""

    name = "gradcam++"
    needs_gradients = True

    def weights(self, batch: CamBatch, targets: Tensor, grads: Tensor | None) -> Tensor:
        grads, acts = _need(grads), batch.acts
        g2 = grads.pow(2)
        sum_acts = acts.sum(dim=(2, 3), keepdim=True)
        alpha = g2 / (2 * g2 + sum_acts * g2 * grads + 1e-6)
        alpha = torch.where(grads != 0, alpha, torch.zeros_like(alpha))
        return (grads.clamp(min=0) * alpha).sum(dim=(2, 3))


@register_cam_method
class HiResCAM(CamMethod):
    """HiResCAM (Draelos & Carin): the gradient weights each position, no spatial mean."""

    name = "hirescam"
    needs_gradients = True

    def weights(self, batch: CamBatch, targets: Tensor, grads: Tensor | None) -> Tensor:
        return _need(grads)


@register_cam_method
class XGradCAM(CamMethod):
    """XGrad-CAM (Fu et al.): gradients weighted by the normalised activations."""

    name = "xgradcam"
    needs_gradients = True

    def weights(self, batch: CamBatch, targets: Tensor, grads: Tensor | None) -> Tensor:
        acts = batch.acts
        sum_acts = acts.sum(dim=(2, 3), keepdim=True)
        return (_need(grads) * acts / (sum_acts + _EPS)).sum(dim=(2, 3))


@register_cam_method
class LayerCAM(CamMethod):
    """Layer-CAM (Jiang et al.): the positive gradient weights each position."""

    name = "layercam"
    needs_gradients = True

    def weights(self, batch: CamBatch, targets: Tensor, grads: Tensor | None) -> Tensor:
        return _need(grads).clamp(min=0)


@register_cam_method
class EigenCAM(CamMethod):
    """Eigen-CAM (Muhammad & Yeasin): the first principal component of the activations;
    class-agnostic, so every class gets the same map."""

    name = "eigencam"

    def maps(self, batch: CamBatch, targets: Tensor, grads: Tensor | None) -> Tensor:
        return _eigen_map(batch.acts)

    def class_maps(self, batch: CamBatch, num_classes: int) -> Tensor:
        return _eigen_map(batch.acts)[:, None].expand(-1, num_classes, -1, -1)


@register_cam_method
class ScoreCAM(CamMethod):
    """Score-CAM (Wang et al.): each channel's upsampled map masks the input; the softmax of
    the target logits over channels weights the channels. C forward passes per image, which
    serve every class at once."""

    name = "scorecam"

    def weights(self, batch: CamBatch, targets: Tensor, grads: Tensor | None) -> Tensor:
        acts = batch.acts
        logits = _score_logits(batch.model, batch.images, acts, batch_size=batch.batch_size)  # (B, C, K)
        return torch.softmax(logits.gather(2, targets[:, None, None].expand(-1, acts.shape[1], 1))[..., 0], dim=1)

    def class_maps(self, batch: CamBatch, num_classes: int) -> Tensor:
        acts = batch.acts
        weights = torch.softmax(_score_logits(batch.model, batch.images, acts, batch_size=batch.batch_size),
                                dim=1)  # (B, C, K)
        return torch.einsum("bck,bchw->bkhw", weights.to(acts.dtype), acts)


@register_cam_method
class ClassifierCAM(CamMethod):
    """CAM (Zhou et al.): the classifier's weights of the target class weight the channels;
    needs a Linear classifier reading the target layer's channels (ResNet, DenseNet)."""

    name = "cam"

    def weights(self, batch: CamBatch, targets: Tensor, grads: Tensor | None) -> Tensor:
        return _classifier_weight(batch.model, batch.acts)[targets]

    def class_maps(self, batch: CamBatch, num_classes: int) -> Tensor:
        acts = batch.acts
        return torch.einsum("kc,bchw->bkhw", _classifier_weight(batch.model, acts), acts)


def _need(grads: Tensor | None) -> Tensor:
    if grads is None:  # a method with needs_gradients = True is always given them
        raise ReportError("a gradient CAM method was called without gradients")
    return grads


def _classifier_weight(model: nn.Module, acts: Tensor) -> Tensor:
    """The classifier's (K, C) weight for method 'cam', which needs it to read the target layer."""
    try:
        weight = _final_linear(model)[1].weight
    except ReportError as exc:
        raise ReportError(f"{exc}; method 'cam' needs one (choose one of {', '.join(gradient_methods())})") from None
    if weight.shape[1] != acts.shape[1]:
        raise ReportError(f"method 'cam': the classifier takes {weight.shape[1]} features but "
                          f"the target layer gives {acts.shape[1]} channels")
    return weight.to(acts.dtype)


def _eigen_map(acts: Tensor) -> Tensor:
    """Projection on the first principal component of the activations (Muhammad & Yeasin)."""
    b, c, h, w = acts.shape
    flat = torch.nan_to_num(acts.float()).flatten(2).transpose(1, 2)  # (B, hw, C)
    flat = flat - flat.mean(dim=1, keepdim=True)
    _, _, vh = torch.linalg.svd(flat, full_matrices=False)
    proj = flat @ vh[:, 0, :, None]  # (B, hw, 1)
    # An SVD's sign is arbitrary: orient the map along the summed activation, so "high" means
    # "strongly active" rather than whichever sign LAPACK returned.
    energy = flat.sum(dim=2, keepdim=True)
    sign = torch.sign((proj * energy).sum(dim=1, keepdim=True))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    return (proj * sign).reshape(b, h, w)


def _score_logits(model: nn.Module, images: Tensor, acts: Tensor, *, batch_size: int) -> Tensor:
    """Logits (B, C, K) of each image (B, c, H, W) masked by each of its C upsampled
    activation maps, every (image, channel) pair in batches of ``batch_size``.

    The masks stay on the CAM grid until their batch is made, and a channel that is zero
    everywhere (common after the last ReLU) masks its image to zeros: one forward pass of a
    zero image stands for all of them, exactly what each of their passes would return.
    """
    b, c = acts.shape[:2]
    size = images.shape[-2:]
    flat = acts.float().reshape(b * c, *acts.shape[2:])
    alive = torch.nonzero(flat.flatten(1).ne(0).any(1)).flatten()
    out: Tensor | None = None
    with torch.inference_mode():
        for start in range(0, alive.numel(), max(1, batch_size)):
            pairs = alive[start:start + batch_size]
            # align_corners=True as in pytorch_grad_cam's ScoreCAM (UpsamplingBilinear2d).
            up = F.interpolate(flat[pairs, None], size=size, mode="bilinear", align_corners=True)
            lo = up.amin(dim=(2, 3), keepdim=True)
            hi = up.amax(dim=(2, 3), keepdim=True)
            masked = images[pairs // c] * ((up - lo) / (hi - lo + 1e-8)).to(images.dtype)
            logits = model(_to_device(masked, images.device)).float()
            if out is None:
                out = logits.new_empty((b * c, logits.shape[1]))
            out[pairs] = logits
        if alive.numel() < b * c:
            empty = model(torch.zeros_like(images[:1])).float()
            if out is None:
                out = empty.new_empty((b * c, empty.shape[1]))
            dead = torch.ones(b * c, dtype=torch.bool, device=out.device)
            dead[alive] = False
            out[dead] = empty
    assert out is not None
    return out.reshape(b, c, -1)
