"""Each layer's input shape inside a model, found without arithmetic on real data, and cached.

A shape-only forward pass: the model's parameters and buffers are swapped for storage-free ``meta`` tensors
(``torch.func.functional_call``) and a ``meta`` input runs through it, so no convolution is computed.  A model
whose forward cannot run on ``meta`` tensors (data-dependent control flow, ops without a meta kernel) gets
one real forward pass on a zero batch instead; both give the same shapes.  Every module's own train/eval
flag is restored afterwards.

The shapes are cached per model and input shape, keyed by the model's structure: every submodule's name,
identity, type and public scalar attributes (kernel sizes, strides, paddings, pooling sizes, ...).  Replacing
a submodule or editing such an attribute invalidates the entry; a forward whose shapes depend on anything
else edited in place after the first call needs ``clear_shape_cache()``.
"""
from __future__ import annotations

import weakref

import torch
import torch.nn as nn

from nblib.norms.conv_geometry import CONV_TYPES, output_size

SUPPORTED = (*CONV_TYPES, nn.Linear)
LINEAR_LIKE = (nn.modules.conv._ConvNd, nn.Bilinear)  # linear layers: supported or an error, never skipped
BATCHNORM = nn.modules.batchnorm._BatchNorm


_CACHE: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()
_SCALARS = (bool, int, float, str, tuple, type(None))


def clear_shape_cache() -> None:
    """Forget every cached shape pass (see the module docstring for when this is needed)."""
    _CACHE.clear()


def _fingerprint(model: nn.Module) -> tuple:
    return tuple((name, id(m), type(m), tuple((k, v) for k, v in vars(m).items()
                                             if k[0] != "_" and k != "training" and type(v) in _SCALARS))
                 for name, m in model.named_modules())


def _forward(model: nn.Module, shape, meta: bool) -> None:
    tensors = {**dict(model.named_parameters(remove_duplicate=False)),
               **dict(model.named_buffers(remove_duplicate=False))}
    if not tensors:
        model(torch.zeros(shape, device="meta" if meta else None))
        return
    first = next(iter(tensors.values()))
    dtype = first.dtype if first.is_floating_point() else torch.get_default_dtype()
    if meta:
        swapped = {name: torch.empty_like(t, device="meta") for name, t in tensors.items()}
        torch.func.functional_call(model, swapped, (torch.zeros(shape, dtype=dtype, device="meta"),))
    else:
        model(torch.zeros(shape, dtype=dtype, device=first.device))


def _shape_pass(model: nn.Module, input_shape) -> tuple[dict, dict]:
    """``({name: {input shapes}}, {name: {output spatial sizes}})`` of every conv, Linear and BatchNorm
    (output sizes for transposed convs only) from one shape-only forward pass in eval mode."""
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, (*SUPPORTED, BATCHNORM))]
    seen: dict[str, set] = {name: set() for name, _ in layers}
    out_seen: dict[str, set] = {name: set() for name, _ in layers}

    def pre_hook(name):
        def record(_module, inputs):
            seen[name].add(tuple(inputs[0].shape[1:]))
        return record

    def post_hook(name):
        def record(_module, _inputs, output):
            out_seen[name].add(tuple(output.shape[2:]))
        return record

    handles = [m.register_forward_pre_hook(pre_hook(name)) for name, m in layers]
    handles += [m.register_forward_hook(post_hook(name)) for name, m in layers
                if isinstance(m, nn.modules.conv._ConvTransposeNd)]
    modes = [(m, m.training) for m in model.modules()]
    # tensors a forward may overwrite on its module (e.g. ``self.t = self.t.type_as(x)``): put back after the
    # meta pass, which would leave them on the meta device
    attributes = [(m, k, v) for m in model.modules() for k, v in vars(m).items() if isinstance(v, torch.Tensor)]
    try:
        model.eval()
        with torch.no_grad():
            try:
                _forward(model, (1, *input_shape), meta=True)
            except Exception:  # noqa: BLE001 -- not meta-traceable: the same shapes from one real pass
                for s in (*seen.values(), *out_seen.values()):
                    s.clear()
                for m, k, v in attributes:
                    m.__dict__[k] = v
                _forward(model, (1, *input_shape), meta=False)
    finally:
        for h in handles:
            h.remove()
        for m, training in modes:  # every module's own flag, not model.train(flag) recursively
            m.training = training
        for m, k, v in attributes:
            m.__dict__[k] = v
    return seen, out_seen


def overrides_forward(module: nn.Module) -> bool:
    """True for a subclass of a conv / Linear class that replaces its ``forward`` (e.g. timm's ``StdConv2d``,
    which standardises its weight first): its operator is not the convolution by its ``weight``."""
    base = next((cls for cls in SUPPORTED if isinstance(module, cls)), None)
    return base is not None and type(module).forward is not base.forward


def unnormed_modules(model: nn.Module, include_batchnorm: bool = False) -> dict:
    """``{name: module}`` of every module that holds parameters of its own but is not a layer the tables norm
    (e.g. GroupNorm, LayerNorm, a custom module calling ``F.conv2d`` on its own weight): the tables list them
    with a reason instead of skipping them in silence.  BatchNorm left out by ``include_batchnorm=False`` is a
    chosen view, not listed."""
    normed = (*SUPPORTED, BATCHNORM) if include_batchnorm else SUPPORTED
    skipped = () if include_batchnorm else (BATCHNORM,)
    return {name: m for name, m in model.named_modules()
            if next(m.parameters(recurse=False), None) is not None
            and (overrides_forward(m) or not isinstance(m, (*normed, *skipped)))}


def layer_input_shapes(model: nn.Module, input_shape, include_batchnorm: bool = False,
                       allow_unreached: bool = False, skip_custom: bool = False) -> dict:
    """``{name: (module, input shape without batch)}`` for every conv (Conv1d/2d/3d, ConvTranspose1d/2d/3d)
    and Linear layer (and BatchNorm if asked), in module order.

    One shape-only forward pass in eval mode of a batch of one input of shape ``input_shape`` (without the
    batch dimension: ``(C, H, W)`` for images, ``(C, L)`` / ``(C, D, H, W)`` for 1-D / 3-D, ``(n,)`` for
    vectors) with hooks.  No layer is skipped: a conv the forward pass never reaches, a layer called on two
    input shapes, a transposed conv called with an ``output_size`` that changes its output padding, or a
    linear layer of a kind this package cannot evaluate (e.g. nn.Bilinear) raises ValueError naming it.
    With ``allow_unreached=True`` a layer the forward never calls (a block some architectures define but never
    use) maps to ``(module, None)`` instead of raising.  A conv / Linear subclass that replaces ``forward``
    (:func:`overrides_forward`) raises ValueError naming it, or with ``skip_custom=True`` is left out (the
    tables list it through :func:`unnormed_modules`).
    """
    if isinstance(input_shape, int) or not all(type(v) is int and v > 0 for v in input_shape):
        raise ValueError(f"input_shape must be one input's shape without the batch dimension (positive ints), "
                         f"got {input_shape!r}")
    layers = []
    for name, m in model.named_modules():
        if overrides_forward(m):
            if skip_custom:
                continue
            raise ValueError(f"layer {name!r} is a {type(m).__name__}, which replaces {type(m).__mro__[1].__name__}"
                             ".forward: its operator is not the product by its weight, so it has no norm here")
        if isinstance(m, SUPPORTED) or (include_batchnorm and isinstance(m, BATCHNORM)):
            layers.append((name, m))
        elif isinstance(m, LINEAR_LIKE):
            raise ValueError(f"layer {name!r} is a {type(m).__name__}; supported: Conv1d/2d/3d, "
                             "ConvTranspose1d/2d/3d, Linear and BatchNorm")
    if not layers:
        raise ValueError("model has no conv or Linear layer")
    key = (tuple(input_shape), _fingerprint(model))
    cached = _CACHE.get(model)
    if cached is None or cached[0] != key:
        cached = (key, _shape_pass(model, input_shape))
        _CACHE[model] = cached
    seen, out_seen = cached[1]
    out = {}
    for name, m in layers:
        if not seen[name] and allow_unreached:
            out[name] = (m, None)
            continue
        if isinstance(m, nn.modules.conv._ConvNd) and not seen[name]:
            raise ValueError(f"conv layer {name!r} was not reached by the forward pass; its input size is unknown")
        if len(seen[name]) > 1:
            raise ValueError(f"layer {name!r} is called on several input shapes {sorted(seen[name])}")
        shape = next(iter(seen[name])) if seen[name] else None
        if isinstance(m, nn.modules.conv._ConvTransposeNd):
            want = output_size(m, shape[1:])
            if out_seen[name] != {want}:
                raise ValueError(f"transposed conv {name!r} produced spatial size {sorted(out_seen[name])}, not "
                                 f"{want} from its output_padding: it is called with output_size=...; set "
                                 "output_padding on the layer instead so that its norm is well defined")
        out[name] = (m, shape)
    return out
