"""The int8 synthesis: a bit-exact decoder whose activations are 8-bit integers from layer to layer.

``exact`` computes the synthesis on fine fixed-point grids (activations 2^-14, weights
2^-16), with float64 passes between layers and 2-5 int8 digit products per
convolution. Models whose config says ``synthesis: "int8"`` decode with this
arithmetic instead, about twice as fast. It is the definition of those models'
pixels, so every step below is part of the format:

* Weights: each convolution's weights are ``round(w / s_o)`` with
  ``s_o = max|w[o]| / 127`` per output channel (float64 arithmetic on the stored
  float32 weights). A transposed convolution runs as its sub-pixel convolution.
* Activations: a convolution's input is ``clamp(round(x / s), -L, L)`` with a per-tensor
  scale ``s = amax / L`` (``amax`` is stored with the weights: ``ANFIC.int8_scales``).
  L = 127 (one int8 digit), except the first convolution of every network and
  the last of g_s1's branch. Those take L = 32639, two balanced int8 digits:
  8-bit inputs cost 0.59 and 0.41 dB there at q8 (bench/int8_sensitivity.py).
* Products: exact integer products of those integers, in whichever ``arith`` backend
  is fastest here (int8 with int32 sums where the CPU has VNNI or AMX, float32 digit
  planes as matrix products chunked below 2^24 or as float32 convolutions, or float64):
  every backend gives the same integers.
* Between convolutions, in float32, one IEEE operation at a time (each correctly
  rounded, so the same on every machine): ``v = acc * (s * s_o) + bias``. Then
  GDN/IGDN or LeakyReLU, then requantization for the next convolution. GDN's
  ``x^2`` is ``clamp(round(v^2 / s_sq), 0, 65535)`` and gamma is 7-bit per output channel;
  their 1x1 product ``x^2 @ G`` is an exact integer (an ``arith`` product like the
  convolutions'), rounded once to float32. Then ``norm = sqrt(that * (s_sq * s_g) + beta)``, the correctly rounded
  square root (``arith.sqrt_``). (Until session 16 the product ran as two float32 products
  of 8-bit halves, ``hi @ G * 256 + lo @ G``: the same exact sum, rounded once, so the same
  value.)
* A network's last convolution writes float64 on the 2^-14 grid,
  ``round(acc * (s * s_o * 2^14) + bias * 2^14)``, which is what ``exact`` networks
  exchange. The flow's sums and the post-filter's strength stay as in ``ANFIC.synthesize_exact``.

Each convolution runs in strips of output rows, and all of the above is done on
a strip while it is in cache.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import arith
from .entropy_models import GDN
from .exact import SYNTH_ACT_BITS
from .lowering import Conv, Product, conv_strips, lower
from .lowering import GDN as GDNOp
from .lowering import LeakyReLU as LeakyOp

# Two balanced int8 digits reach 127 + 127 * 256; one reaches 127; GDN's x^2 has 16 bits.
from .decoder.nets import NARROW_LIMIT, SQ_LIMIT, WIDE_LIMIT  # noqa: E402
from .decoder.nets import wide_inputs as nets_wide_inputs  # noqa: E402

_CONV = (nn.Conv2d, nn.ConvTranspose2d)


def _modules(seq: nn.Module) -> list[nn.Module]:
    return list(seq) if isinstance(seq, nn.Sequential) else [seq]


def _scaled(model):
    """(network name, its modules, index in them, index in ``int8_scales``) of every convolution and
    GDN of the decoder's networks: the layers with a stored scale, in storage order."""
    at = 0
    for name, net in model.decoder_networks().items():
        modules = _modules(net)
        for i, m in enumerate(modules):
            if isinstance(m, (*_CONV, GDN)):
                yield name, modules, i, at
                at += 1


def scale_count(model) -> int:
    """How many activation scales the model stores: one per convolution and one per GDN."""
    return sum(1 for _ in _scaled(model))


def wide_inputs(name: str, modules: list[nn.Module]) -> set[int]:
    """Indices of the convolutions with 16-bit (two-digit) inputs (``decoder.nets.wide_inputs``)."""
    return nets_wide_inputs(name, [isinstance(m, _CONV) for m in modules])


class Int8Conv:
    """One convolution of the int8 synthesis (a lowered ``Conv``), with the operation after it."""

    def __init__(self, op: Conv, amax: float, wide: bool, post: GDNOp | LeakyOp | None, post_amax: float):
        rep = op.shuffle**2
        s_w = torch.from_numpy(op.output_scale_groups()).clamp_min(2.0**-60) / 127   # per output channel of the layer
        s_col = s_w.repeat_interleave(rep)                          # per product column (sub-pixel phase)
        bias = op.bias if op.bias is not None else torch.zeros_like(s_col)
        self.limit = WIDE_LIMIT if wide else NARROW_LIMIT
        self.s_in = max(float(amax), 2.0**-60) / self.limit
        self.inv_s_in = float(torch.tensor(1.0 / self.s_in).float())  # the float32 requantization factor
        self.pad, self.shuffle = op.pad, op.shuffle
        self.product = Product(torch.round(op.weight / s_col.view(-1, 1, 1, 1)), None, op.stride, "int8")
        self.product.float32_results = True  # ``__call__`` scales them in float32 (``Int8Sequential``: not the last)
        self.scale = (self.s_in * s_col).float()   # one accumulator unit, per product column
        self.bias = bias.float()
        self.out_scale64 = self.s_in * s_col * 2.0**SYNTH_ACT_BITS  # for the grid output
        self.bias64 = bias * 2.0**SYNTH_ACT_BITS
        self.gdn = post if isinstance(post, GDNOp) else None
        if self.gdn is not None:
            s_g = post.gamma.amax(dim=1).clamp_min(2.0**-60) / 127
            c = post.gamma.shape[0]
            # gamma @ x^2 as an exact 1x1 product (x^2: 16 bits, gamma: 0..127), in the backend
            # measured fastest for it: float64, or conv32 (two 9-bit planes of x^2 in float32).
            self.gamma = Product(torch.round(post.gamma / s_g[:, None]).reshape(c, c, 1, 1), None, 1, "int8-gdn")
            self.gamma.float32_results = True  # the exact sum is rounded to float32 next
            s_sq = max(float(post_amax), 2.0**-60) ** 2 / SQ_LIMIT
            self.inv_s_sq = float(torch.tensor(1.0 / s_sq).float())
            self.norm_scale = (s_sq * s_g).float()
            self.beta = post.beta.float()
        self.slope = post.slope if isinstance(post, LeakyOp) else None

    def to(self, device: torch.device) -> "Int8Conv":
        self.product.to(device)
        if self.gdn is not None:
            self.gamma.to(device)
        for name in ("scale", "bias", "out_scale64", "bias64", "norm_scale", "beta"):
            if hasattr(self, name) and getattr(self, name).device != device:
                setattr(self, name, getattr(self, name).to(device))
        return self

    def quantize(self, grid: torch.Tensor) -> torch.Tensor:
        """float64 2^-14-grid NCHW -> this convolution's integer input, NHWC (int8, or float32 if wide)."""
        v = grid.permute(0, 2, 3, 1).mul(2.0**-SYNTH_ACT_BITS / self.s_in).round_().clamp_(-self.limit, self.limit)
        return v.to(torch.int8 if self.limit == NARROW_LIMIT else torch.float32)

    def __call__(self, x: torch.Tensor, nxt: "Int8Conv | None") -> torch.Tensor:
        """``x``: integer input NHWC. Returns the next convolution's integer input (NHWC), or, for the
        network's last convolution (``nxt`` None), float64 2^-14-grid NCHW."""
        if nxt is None:
            out = conv_strips(x, self.product, self.pad, self.limit, self.shuffle,
                              columns=lambda acc: acc.double().mul_(self.out_scale64).add_(self.bias64).round_())
            return out.permute(0, 3, 1, 2)
        return conv_strips(x, self.product, self.pad, self.limit, self.shuffle,
                           columns=lambda acc: acc.float().mul_(self.scale).add_(self.bias),
                           pixels=lambda v: nxt.requantize(self._post(v)))

    def _post(self, v: torch.Tensor) -> torch.Tensor:
        """GDN / IGDN / LeakyReLU on real float32 values [..., C], one IEEE operation at a time."""
        if self.gdn is not None:
            sq = (v * v).mul_(self.inv_s_sq).round_().clamp_(0, SQ_LIMIT)
            be = self.gamma.backend(sq, SQ_LIMIT)
            norm = arith.sqrt_(self.gamma(sq, SQ_LIMIT, be).float().mul_(self.norm_scale).add_(self.beta))
            return v.mul_(norm) if self.gdn.inverse else v.div_(norm)
        if self.slope is not None:
            return F.leaky_relu(v, self.slope)
        return v

    def requantize(self, v: torch.Tensor) -> torch.Tensor:
        """Real float32 values -> this convolution's integer input: int8, or for a wide (two-digit)
        input the float32 integers themselves (digits split faster from float32 than from int32)."""
        v = v.mul_(self.inv_s_in).round_().clamp_(-self.limit, self.limit)
        return v.to(torch.int8) if self.limit == NARROW_LIMIT else v


class Int8Sequential:
    """A decoder network (Sequential of convolutions, GDN/IGDN, LeakyReLU) in the int8 arithmetic.

    ``scales``: max |input| of each convolution and each GDN, in module order. Called like an
    ``exact.ExactSequential`` on the synthesis grid: float64 2^-14-grid NCHW in and out.
    """

    def __init__(self, name: str, seq: nn.Module, scales: list[float]):
        modules = _modules(seq)
        ops = lower(seq)  # one operation per module
        wide = wide_inputs(name, modules)
        amax = dict(zip([i for i, m in enumerate(modules) if isinstance(m, (*_CONV, GDN))], scales, strict=True))
        self.convs = []
        for i, op in enumerate(ops):
            if isinstance(op, Conv):
                post = ops[i + 1] if i + 1 < len(ops) and not isinstance(ops[i + 1], Conv) else None
                self.convs.append(Int8Conv(op, amax[i], i in wide, post, amax.get(i + 1, 0.0)))
        self.convs[-1].product.float32_results = False  # the last writes the exact 2^-14 grid

    def __call__(self, grid: torch.Tensor) -> torch.Tensor:
        convs = [c.to(grid.device) for c in self.convs]
        x = convs[0].quantize(grid)
        for i, conv in enumerate(convs):
            x = conv(x, convs[i + 1] if i + 1 < len(convs) else None)
        return x


@torch.no_grad()
def calibrate(model, images: list[torch.Tensor], qualities=(2, 5, 8)) -> torch.Tensor:
    """max |input| of every convolution and GDN of the decoder's networks, over the float decodes of
    ``images`` ([1, 3, H, W] in [0, 1], padded) at ``qualities``: the stored scales, in order."""
    amax = [0.0] * scale_count(model)
    hooks = []
    for _, modules, i, index in _scaled(model):
        def hook(mod, args, index=index):
            amax[index] = max(amax[index], args[0].detach().abs().amax().item())
        hooks.append(modules[i].register_forward_pre_hook(hook))
    try:
        with model.refining_against_float():  # the int8 decoder needs the scales being measured
            for x in images:
                for q in qualities:
                    model.decompress_float(model.compress(x, q, model.default_refine(q)), q)
    finally:
        for h in hooks:
            h.remove()
    return torch.tensor(amax, dtype=torch.float32)


def build(model) -> dict[str, Int8Sequential]:
    """The int8 networks of a model with ``synthesis: "int8"``, from its stored scales."""
    scales = model.int8_scales.double().tolist()
    per_net: dict[str, list[float]] = {}
    for name, _, _, index in _scaled(model):
        per_net.setdefault(name, []).append(scales[index])
    return {name: Int8Sequential(name, net, per_net[name]) for name, net in model.decoder_networks().items()}


def fake_quantize(model) -> list:
    """Training for the int8 synthesis: every 8-bit convolution input of the decoder's networks is
    rounded to its stored scale as the int8 decoder rounds it, with a straight-through gradient.
    Forward hooks only (the state dict is untouched); returns their handles."""
    handles = []
    for name, modules, i, index in _scaled(model):
        if isinstance(modules[i], _CONV) and i not in wide_inputs(name, modules):
            def hook(mod, args, index=index):
                x = args[0]
                step = model.int8_scales[index].float().clamp_min(2.0**-60) / NARROW_LIMIT
                q = (torch.round(x.float() / step).clamp_(-NARROW_LIMIT, NARROW_LIMIT) * step).to(x.dtype)
                return (x + (q - x).detach(),)
            handles.append(modules[i].register_forward_pre_hook(hook))
    return handles
