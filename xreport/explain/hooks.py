"""The model as the explanations use it: prepared (eval mode, no parameter gradients, on
a device; everything restored), hooked at the CAM target layer, its classifier found, and
the checks of CAM inputs and targets."""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Protocol

import torch
from torch import Tensor, nn

from ..errors import ReportError


TargetLayerFn = Callable[[nn.Module], "nn.Module | tuple[nn.Module, str]"]


@contextlib.contextmanager
def _prepared(model: nn.Module, device: str | torch.device | None) -> Iterator[torch.device]:
    """Eval mode, no parameter gradients, on ``device``; everything restored on exit."""
    params = list(model.parameters())
    first = params[0] if params else None
    home = first.device if first is not None else torch.device("cpu")
    target = torch.device(device) if device is not None else home
    flags = [p.requires_grad for p in params]
    training = model.training
    model.eval()
    for p in params:
        p.requires_grad_(False)
    if target != home:
        model.to(target)
    # channels_last convolutions run 25-40% faster on CPU (oneDNN); restored on exit.
    dense = [(p, p.is_contiguous()) for p in params if p.dim() == 4] if target.type == "cpu" else []
    if dense:
        model.to(memory_format=torch.channels_last)
    try:
        yield target
    finally:
        for p, was_contiguous in dense:
            if was_contiguous:
                p.data = p.data.contiguous()
        if target != home:
            model.to(home)
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
        model.train(training)


class RowIndexed(Protocol):
    """Float images that are indexed by rows, like a tensor: evaluate.NormalizedView
    normalises on access, so a whole split never exists as float."""

    shape: torch.Size

    def __getitem__(self, index: Tensor) -> Tensor: ...


class _Capture:
    """Forward hook on the target layer: keeps its output and, in grad mode, makes it a leaf."""

    def __init__(self) -> None:
        self.leaf: Tensor | None = None
        self.out: Tensor | None = None

    @property
    def output(self) -> Tensor:
        """The layer's output of the last forward pass (the hook has run by then)."""
        if self.out is None:
            raise ReportError("the CAM target layer was not reached by the forward pass")
        return self.out

    @property
    def grad_leaf(self) -> Tensor:
        """The leaf tensor gradients are taken with respect to (grad mode only)."""
        if self.leaf is None:
            raise ReportError("the CAM target layer was not reached by the forward pass")
        return self.leaf

    def __call__(self, module: nn.Module, inputs: tuple[Tensor, ...], output: object) -> Tensor | None:
        if not isinstance(output, Tensor) or output.dim() != 4:
            raise ReportError(f"CAM target layer {type(module).__name__} must output a (B, C, h, w) "
                              f"tensor, got {type(output).__name__}")
        if not torch.is_grad_enabled():
            # DenseNet applies relu in place after norm5: keeping the same tensor means we read
            # the activations the head actually pools, as pytorch_grad_cam does.
            self.leaf = self.out = output
            return None
        self.leaf = output.detach().requires_grad_(True)
        # A clone, so later in-place ops (DenseNet's relu) act on a non-leaf.
        self.out = self.leaf.clone()
        return self.out


@contextlib.contextmanager
def _hooked(target_layer: nn.Module) -> Iterator[_Capture]:
    capture = _Capture()
    handle = target_layer.register_forward_hook(capture)
    try:
        yield capture
    finally:
        handle.remove()


def _to_device(x: Tensor, device: torch.device) -> Tensor:
    x = x.detach().to(device)  # an input that requires grad would make autograd record the backbone
    return x.contiguous(memory_format=torch.channels_last) if device.type == "cpu" else x


def _as_module(found: nn.Module | tuple[nn.Module, str]) -> nn.Module:
    return found[0] if isinstance(found, tuple) else found


def _final_linear(model: nn.Module) -> tuple[str, nn.Linear]:
    """The last ``nn.Linear`` in module order: the classifier of ResNet/DenseNet heads."""
    found = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not found:   # method 'cam' adds which methods need none (methods.py owns the registry)
        raise ReportError(f"{type(model).__name__} has no Linear classifier")
    return found[-1]


def _check_inputs(x: Tensor, targets: Tensor) -> None:
    if x.dim() != 4 or not x.is_floating_point():
        raise ReportError(f"CAM input must be a float (B, C, H, W) tensor, got {tuple(x.shape)} {x.dtype}")
    if targets.shape != (x.shape[0],):
        raise ReportError(f"targets must have shape ({x.shape[0]},), got {tuple(targets.shape)}")


def _check_targets(targets: Tensor, num_outputs: int) -> None:
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= num_outputs):
        raise ReportError(f"CAM target class out of range: model has {num_outputs} outputs, "
                          f"targets span {int(targets.min())}..{int(targets.max())}")


def _module_path(model: nn.Module, target: nn.Module) -> str:
    for name, module in model.named_modules():
        if module is target:
            return name
    raise ReportError(f"CAM target layer {type(target).__name__} is not a submodule of "
                      f"{type(model).__name__}")
