"""Norm regularizers of the paper's Table 2: weight decay, singular value clipping, norm decay.

* **Norm decay** (Liang & Huang, AAAI 2021, eq. 5 and Algorithm 1): gradient descent on
  ``L(theta) + beta/N sum_i ||theta^(i)||_p`` with ``p`` in ``{1, inf}``, where ``theta^(i)`` is the linear map
  of the i-th conv / Linear layer at its true input size (the exact norms of ``nblib.norms``), and the
  sparse (sub)gradient of the norms smoothed by a momentum ``gamma``.  See :class:`NormDecay`.
* **Weight decay** is the optimizer's own ``weight_decay`` (:func:`make_optimizer`); it needs no object here.
* **Singular value clipping** (Sedghi, Gupta & Long, ICLR 2019): every ``clip_every`` steps, project each
  conv onto the convolutions whose circular operator has singular values ``<= c`` (approximately: the
  projection is followed by a truncation to the kernel's support).  See
  :func:`nblib.training.clipping.clip_singular_values`.

:func:`build_regularizer` maps the names used in the experiment configs (``none``, ``wd``, ``svc``,
``nd_l1``, ``nd_linf``) to these objects.  Each object has a ``hook`` attribute that tells a training loop
when to call its ``step``: ``"before_optimizer_step"`` (norm decay edits ``.grad``) or
``"after_optimizer_step"`` (SVC edits the weights).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from nblib.norms.conv_geometry import dilated_kernel, resolved_padding
from nblib.norms import (CONV_TYPES, conv_norm, layer_input_shapes, linear_norm, norm_subgradient,
                         sparse_subgradient)
from nblib.training.clipping import SVC_METHODS, clip_linear_singular_values, clip_singular_values
from nblib.vocabulary import NORM_DECAY_P, REGULARIZERS

#: Readings of norm decay's beta: the paper's eq. (5) (beta/N) | the authors' code (beta).
BETA_SCALINGS = ("per_layer", "total")
#: Readings of norm decay's momentum update: Algorithm 1 (``h <- gamma h + (1 - gamma) p``) | the authors' code
#: (``h <- gamma h``, then ``h = sign(w)`` assigned on the maximising row / column).
ND_UPDATES = ("algorithm1", "authors")
#: Layer sets of norm decay (and of Figure 2's comparison): every conv / Linear layer | the authors' code, which
#: skipped the Conv2d layers their closed form did not cover (see :func:`authors_skipped_layers`).
LAYER_SETS = ("every", "authors")
#: Defaults of the regularisers' settings, held here once (``nblib.training.run_config.DEFAULT_CFG`` uses them): norm
#: decay's momentum gamma (Algorithm 1; the authors' value), its beta reading (eq. 5: beta / N), the number
#: of optimizer steps between two singular value clippings (the authors' value), SVC of Linear layers.
GAMMA = 0.5
MOMENTUM = 0.9  # SGD momentum (the paper)
BETA_SCALING = "per_layer"
ND_UPDATE = "algorithm1"
LAYER_SET = "every"
CLIP_EVERY = 100
SVC_LINEAR = True
BEFORE_OPTIMIZER_STEP = "before_optimizer_step"
AFTER_OPTIMIZER_STEP = "after_optimizer_step"


def _layer_table(model: nn.Module, input_shape) -> dict:
    """``{name: (module, (H, W) or None)}`` for every Conv2d / Linear, each conv at its true input size
    (singular value clipping's table: any other convolution raises, naming the layer)."""
    out = {}
    for name, (m, in_shape) in layer_input_shapes(model, input_shape).items():
        if isinstance(m, CONV_TYPES) and not isinstance(m, nn.Conv2d):
            raise ValueError(f"layer {name!r} is a {type(m).__name__}; singular value clipping supports Conv2d "
                             "and Linear layers only")
        out[name] = (m, tuple(int(v) for v in in_shape[-2:]) if isinstance(m, nn.Conv2d) else None)
    return out


def authors_skipped_layers(model: nn.Module, input_shape) -> list[str]:
    """The Conv2d layers the authors' code left out of norm decay and of Figure 2: grouped convolutions
    (``groups > 1``: RegNetX-200MF's 13) and convolutions whose input is smaller than the kernel's reach
    (VGG-11's two convs on 2x2 inputs), in module order."""
    out = []
    for name, (m, in_shape) in layer_input_shapes(model, input_shape).items():
        if isinstance(m, nn.Conv2d):
            reach = dilated_kernel(m).shape[-2:]
            if m.groups > 1 or any(i < r for i, r in zip(in_shape[-2:], reach)):
                out.append(name)
    return out


def norm_decay_layers(model: nn.Module, input_shape, layer_set: str = LAYER_SET) -> dict:
    """``{name: (module, spatial input size or None)}`` for every conv (Conv1d/2d/3d, ConvTranspose1d/2d/3d)
    and Linear layer of ``model``, each conv at its true input size (``layer_input_shapes``); with
    ``layer_set="authors"`` without :func:`authors_skipped_layers`."""
    if layer_set not in LAYER_SETS:
        raise ValueError(f"layer_set must be one of {LAYER_SETS} (every layer | the authors' code), got "
                         f"{layer_set!r}")
    skipped = set(authors_skipped_layers(model, input_shape)) if layer_set == "authors" else set()
    out = {}
    for name, (m, in_shape) in layer_input_shapes(model, input_shape).items():
        if name not in skipped:
            out[name] = (m, tuple(in_shape[-len(m.kernel_size):]) if isinstance(m, CONV_TYPES) else None)
    return out


def _layer_norm(m: nn.Module, size, p) -> torch.Tensor:
    return conv_norm(m, size, p) if size is not None else linear_norm(m, p)


# --------------------------------------------------------------------------- norm decay
class NormDecay:
    r"""Norm decay, Algorithm 1 of Liang & Huang (AAAI 2021).

    Minimises the augmented loss of eq. (5),

    .. math::  \min_\theta \; \mathcal{L}(\theta) + \frac{\beta}{N} \sum_{i=1}^{N} \|\theta^{(i)}\|_p ,
               \qquad p \in \{1, \infty\},

    where the sum runs over all ``N`` conv (Conv1d/2d/3d, ConvTranspose1d/2d/3d) and Linear layers of
    ``model`` and ``||theta^(i)||_p`` is the exact operator norm of the layer's linear map (bias excluded): the
    largest absolute column sum (``p = 1``) or row sum (``p = inf``) of the conv's matrix on its true input
    size (Theorem 1, eqs. 1-2, or the exact general method of ``nblib.norms`` elsewhere), or of the Linear
    weight.
    Algorithm 1 replaces the gradient of the penalty by a momentum average of it:

    1. ``h <- 0`` (one buffer per layer, the shape of its weight);
    2. each iteration: ``g <- grad L`` (your ``loss.backward()``);
    3. ``p_i <-`` a subgradient of ``||theta^(i)||_p`` w.r.t. the layer's weight: entries in
       ``{-1, 0, +1}``, ``sign(K)`` on the taps of one maximising column (``p = 1``) or row (``p = inf``);
    4. ``h_i <- gamma h_i + (1 - gamma) p_i``;
    5. ``g_i <- g_i + beta/N h_i``;
    6. ``theta <- optimizer step(theta, g)``.

    :meth:`step` does lines 3-5: call it after ``loss.backward()`` and before ``optimizer.step()`` (with
    AMP, after ``scaler.unscale_(optimizer)``; with gradient clipping, decide whether the penalty is
    clipped too and order the calls accordingly).  It works with any optimizer, since it only edits
    ``weight.grad`` (creating it when ``None``).  The subgradient is ``nblib.norms.norm_subgradient`` at the
    layer's input size (learnt once at construction by one shape-only forward pass, ``layer_input_shapes``);
    ``step`` runs no forward pass of the model and no autograd, only one pass over ``|K|`` per layer.
    With ``gamma = 0`` this is plain subgradient descent on eq. (5).

    ``beta_scaling`` selects the reading of ``beta``: ``"per_layer"`` (default) is the paper's text, eq. (5)
    and line 6 of Algorithm 1, ``beta/N``; ``"total"`` is the authors' code, which adds ``beta h`` without
    dividing by ``N`` (so their ``beta`` equals ``N`` times ours: ``beta = 1e-2`` there is ``1e-2 N`` here).

    The momentum buffers follow their weights: a model moved or cast with ``.to()`` after construction gets
    its buffers moved/cast at the next ``step``.  :meth:`state_dict` / :meth:`load_state_dict` save and
    restore them so a resumed run continues exactly.  A layer whose weight is shared with another layer
    contributes its own term to eq. (5), so the shared weight receives both terms.
    """

    hook = BEFORE_OPTIMIZER_STEP

    def __init__(self, model: nn.Module, input_shape, p, beta: float, gamma: float = GAMMA,
                 beta_scaling: str = BETA_SCALING, update: str = ND_UPDATE, layer_set: str = LAYER_SET):
        if update not in ND_UPDATES:
            raise ValueError(f"update must be one of {ND_UPDATES} (Algorithm 1 | authors' code), got {update!r}")
        if beta_scaling not in BETA_SCALINGS:
            raise ValueError(f"beta_scaling must be one of {BETA_SCALINGS} (paper text beta/N | authors' code "
                             f"beta), got {beta_scaling!r}")
        if p not in (1, math.inf):
            raise ValueError(f"norm decay regularises the l1 or l_inf norm: p must be 1 or math.inf, got {p!r} "
                             "(for the l2 norm use SingularValueClipping)")
        beta, gamma = float(beta), float(gamma)
        if not (math.isfinite(beta) and beta >= 0):
            raise ValueError(f"beta must be a finite number >= 0, got {beta}")
        if not 0.0 <= gamma < 1.0:
            raise ValueError(f"the momentum gamma must lie in [0, 1), got {gamma}")
        self.p, self.beta, self.gamma = (math.inf if p == math.inf else 1), beta, gamma
        self.layers = norm_decay_layers(model, input_shape, layer_set)  # raises for unsupported / unreached layers
        self.layer_set = layer_set
        self.n_layers = len(self.layers)
        self.beta_scaling, self.update = beta_scaling, update
        self.scale = beta / self.n_layers if beta_scaling == "per_layer" else beta  # the factor of h in line 6
        with torch.no_grad():  # fail now, not at the first step, if a norm cannot be evaluated
            for name, (m, hw) in self.layers.items():
                if not m.weight.requires_grad:
                    raise ValueError(f"layer {name!r} has a frozen weight (requires_grad=False); norm decay "
                                     "adds to weight.grad — unfreeze it or build NormDecay on the trainable part")
                _layer_norm(m, hw, self.p)
        self._h = {name: torch.zeros_like(m.weight, memory_format=torch.contiguous_format)
                   for name, (m, _) in self.layers.items()}

    def _buffer(self, name: str, w: torch.Tensor) -> torch.Tensor:
        h = self._h[name]
        if h.device != w.device or h.dtype != w.dtype:
            h = self._h[name] = h.to(device=w.device, dtype=w.dtype)
        return h

    def subgradients(self) -> dict:
        """``{name: p_i}``: a subgradient of each layer's exact norm w.r.t. its weight (line 3), from
        ``nblib.norms.norm_subgradient``: ``sign(K)`` on one maximising row / column of the layer's matrix,
        0 elsewhere (no autograd: one pass over ``|K|`` per layer)."""
        out = {}
        for name, (m, size) in self.layers.items():
            if not m.weight.requires_grad:
                raise ValueError(f"layer {name!r}: weight no longer requires grad; norm decay cannot update it")
            out[name] = norm_subgradient(m, size, self.p)[1]
        return out

    def step(self) -> None:
        """Lines 3-5 of Algorithm 1: ``h <- gamma h + (1-gamma) p``, ``weight.grad += beta/N h``.

        (``beta h`` with ``beta_scaling="total"``; with ``update="authors"`` the block ``p`` is assigned to
        ``gamma h`` on its row / column instead of added with weight ``1 - gamma``.)  ``p`` is non-zero on one
        row / column only (``sparse_subgradient``): ``h`` is scaled in place and the block added, so a step
        costs one pass over ``|K|`` and two over ``h`` per layer, and reads nothing back to the host (the
        maximiser's index stays a device tensor), so a CUDA training step is not stalled once per layer."""
        scale = self.scale
        for name, (m, size) in self.layers.items():
            w = m.weight
            if not w.requires_grad:
                raise ValueError(f"layer {name!r}: weight no longer requires grad; norm decay cannot update it")
            _, (dim, index), block = sparse_subgradient(m, size, self.p)
            h = self._buffer(name, w)
            h.mul_(self.gamma)
            if self.update == "authors":
                h.index_copy_(dim, index, block)  # index stays on the device: no host sync
            else:
                h.index_add_(dim, index, (1.0 - self.gamma) * block)
            if w.grad is None:
                w.grad = h.mul(scale)
            else:
                w.grad.add_(h, alpha=scale)

    def penalty(self) -> torch.Tensor:
        """``beta/N sum_i ||theta^(i)||_p``, the regulariser of eq. (5) (``beta sum_i`` with
        ``beta_scaling="total"``), as a differentiable 0-dim tensor."""
        return sum(_layer_norm(m, hw, self.p) for m, hw in self.layers.values()) * self.scale

    @torch.no_grad()
    def norms(self) -> dict:
        """``{name: ||theta^(i)||_p}`` (floats) of every layer at its input size, for logging."""
        return {name: float(_layer_norm(m, hw, self.p)) for name, (m, hw) in self.layers.items()}

    def state_dict(self) -> dict:
        """Momentum buffers and the settings they depend on (``p``, ``gamma``, ``update``; ``beta`` for the
        record)."""
        return {"p": self.p, "gamma": self.gamma, "update": self.update, "beta": self.beta,
                "h": {name: h.detach().clone() for name, h in self._h.items()}}

    def load_state_dict(self, state: dict) -> None:
        """Restore the momentum buffers (moved to each weight's device and dtype).

        Raises ValueError when ``p``, ``gamma`` or ``update`` differ (the buffers hold a different quantity) or when
        the layer names or weight shapes differ.  ``beta`` is not checked: it only scales the update.
        """
        update = state.get("update", "algorithm1")  # checkpoints written before the reading existed
        if state["p"] != self.p or state["gamma"] != self.gamma or update != self.update:
            raise ValueError(f"state is for p={state['p']}, gamma={state['gamma']}, update={update}; this NormDecay "
                             f"has p={self.p}, gamma={self.gamma}, update={self.update}")
        if set(state["h"]) != set(self._h):
            raise ValueError(f"state holds layers {sorted(state['h'])}, this model has {sorted(self._h)}")
        for name, h in state["h"].items():
            w = self.layers[name][0].weight
            if tuple(h.shape) != tuple(w.shape):
                raise ValueError(f"layer {name!r}: buffer shape {tuple(h.shape)} != weight shape {tuple(w.shape)}")
            self._h[name] = h.detach().to(device=w.device, dtype=w.dtype).clone()


def make_optimizer(model: nn.Module, lr: float, momentum: float = MOMENTUM, weight_decay: float = 0.0):
    """SGD on all parameters (the paper: momentum 0.9).  Weight decay (WD of Table 2) is its ``weight_decay``:
    the gradient gets ``weight_decay * theta`` added, i.e. the penalty ``weight_decay/2 ||theta||_F^2``."""
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)


# ---------------------------------------------------------------- singular value clipping
class SingularValueClipping:
    """Singular value clipping (SVC) of every Conv2d, and by default every Linear, of ``model``.

    Each conv is clipped with :func:`nblib.training.clipping.clip_singular_values` on the circular operator at
    its true input size ``(H, W)`` (learnt once by one forward pass, ``layer_input_shapes``), as Sedghi, Gupta &
    Long and the paper do; with ``padded=True`` at ``(H + 2 p1, W + 2 p2)``, whose circular operator contains the
    zero-padded (and strided) layer as a submatrix, so the clipping bounds the true layer.  Linear layers
    (``include_linear=True``, the default) get the exact SVD clipping of their weight matrix; the paper's
    SVC acts on "the norms of layers" and a Linear layer is one, so both are clipped unless disabled.

    A conv whose input is smaller than its kernel's reach (VGG-11's last two convs see 2 x 2 inputs) has no
    circular operator at its input size; it is clipped at the padded size instead, which bounds the true
    layer, and :attr:`notes` says so for each such layer (``run_one`` records them in ``metrics.json``).
    Sedghi et al.'s code (and so the authors') silently truncates the kernel to the input size there.

    Call :meth:`step` after ``optimizer.step()`` with the number of optimizer steps taken so far
    (``global_step`` = 1 after the first): it clips when ``global_step % clip_every == 0``.  :meth:`clip_now`
    clips at once.  Clipping is approximate for convs (see
    :func:`nblib.training.clipping.clip_singular_values`).  ``method``: how each layer's matrices are clipped
    (:data:`nblib.training.clipping.SVC_METHODS`; ``"auto"``: an SVD on the CPU, batched Newton-Schulz on CUDA).
    """

    hook = AFTER_OPTIMIZER_STEP

    def __init__(self, model: nn.Module, input_shape, c: float, clip_every: int = CLIP_EVERY,
                 include_linear: bool = SVC_LINEAR, padded: bool = False, method: str = "auto"):
        if method not in SVC_METHODS:
            raise ValueError(f"unknown SVC method {method!r}; choose one of {SVC_METHODS}")
        c = float(c)
        if not (math.isfinite(c) and c > 0):
            raise ValueError(f"the clipping threshold c must be a finite number > 0, got {c}")
        if int(clip_every) != clip_every or clip_every < 1:
            raise ValueError(f"clip_every must be a positive integer, got {clip_every!r}")
        self.c, self.clip_every, self.padded, self.method = c, int(clip_every), bool(padded), method
        self.layers, self.notes = {}, {}
        for name, (m, hw) in _layer_table(model, input_shape).items():
            if isinstance(m, nn.Conv2d):
                (l1, h1), (l2, h2) = resolved_padding(m)  # 'same' included
                padded_hw = (hw[0] + l1 + h1, hw[1] + l2 + h2)
                r1, r2 = dilated_kernel(m).shape[-2:]
                if not self.padded and (hw[0] < r1 or hw[1] < r2):
                    self.notes[name] = (f"input {tuple(hw)} is smaller than the kernel's reach {(r1, r2)}: clipped "
                                        f"on the padded size {padded_hw}, whose circular operator contains the layer")
                # a conv that runs has a padded input at least as large as its reach
                self.layers[name] = (m, padded_hw if self.padded or name in self.notes else tuple(hw))
            elif include_linear:
                self.layers[name] = (m, None)

    def clip_now(self) -> dict:
        """Clip every layer now; returns ``{name: largest singular value before clipping}`` (0-dim tensors)."""
        out = {}
        for name, (m, hw) in self.layers.items():
            if isinstance(m, nn.Conv2d):
                out[name] = clip_singular_values(m, hw, self.c, self.method)
            else:
                out[name] = clip_linear_singular_values(m, self.c, self.method)
        return out

    def step(self, global_step: int) -> bool:
        """Clip when ``global_step % clip_every == 0``; returns whether it clipped."""
        if global_step % self.clip_every == 0:
            self.clip_now()
            return True
        return False


# ---------------------------------------------------------------------------- factory
def build_regularizer(kind: str, model: nn.Module, input_shape, strength: float, gamma: float = GAMMA,
                      clip_every: int = CLIP_EVERY, beta_scaling: str = BETA_SCALING, svc_linear: bool = SVC_LINEAR,
                      nd_update: str = ND_UPDATE, nd_layers: str = LAYER_SET):
    """The regulariser object of one column group of Table 2, or None.

    ``"none"`` and ``"wd"`` return None: weight decay is the optimizer's ``weight_decay`` (pass ``strength``
    to :func:`make_optimizer`; :func:`optimizer_weight_decay` does the mapping).  ``"svc"``: clip singular
    values at ``c = strength`` every ``clip_every`` steps.  ``"nd_l1"`` / ``"nd_linf"``: norm decay of the
    l1 / l_inf norm with ``beta = strength`` and momentum ``gamma``.  The returned object's ``hook`` says
    when the training loop calls its ``step``.

    Readings where the paper's text and the authors' code differ: ``beta_scaling`` (norm decay, see
    :class:`NormDecay`: ``"per_layer"`` beta/N as in eq. 5, ``"total"`` beta as in the authors' code),
    ``nd_update`` (norm decay: ``"algorithm1"`` or the authors' assigned update, see :class:`NormDecay`),
    ``nd_layers`` (norm decay: every layer or the authors' layer set, :func:`authors_skipped_layers`) and
    ``svc_linear`` (SVC: also clip the Linear layers, ours; ``False`` clips convolutions only, as Sedghi et
    al. and the authors' code do).  Each is ignored by the other kinds.
    """
    if kind in ("none", "wd"):
        return None
    if kind == "svc":
        return SingularValueClipping(model, input_shape, c=strength, clip_every=clip_every, include_linear=svc_linear)
    if kind in NORM_DECAY_P:
        return NormDecay(model, input_shape, p=NORM_DECAY_P[kind], beta=strength, gamma=gamma,
                         beta_scaling=beta_scaling, update=nd_update, layer_set=nd_layers)
    raise ValueError(f"unknown regularizer kind {kind!r}; choose one of {REGULARIZERS}")


def optimizer_weight_decay(kind: str, strength: float) -> float:
    """The optimizer's ``weight_decay`` for a regulariser kind: ``strength`` for ``"wd"``, else 0."""
    if kind not in REGULARIZERS:
        raise ValueError(f"unknown regularizer kind {kind!r}; choose one of {REGULARIZERS}")
    return float(strength) if kind == "wd" else 0.0
