"""ANFIC: two-step additive augmented normalizing flow with a hyperprior.

Encoding (Ho et al. 2021, additive couplings)::

    z1 = g_a1(x)          x1 = x  - g_s1(z1)
    z2 = z1 + g_a2(x1)    h  = h_a(z2 * gain)
    y  = z2 * gain        y_hat = round(y - mu(h_hat)) + mu(h_hat)
    x2 = x1 - g_s2(y_hat / gain)                  (trained towards 0)

Decoding sets x2 = 0 and runs the couplings backwards, then the
quality-enhancement post-filter. Every step is invertible; only the rounding
loses information.

Variable rate: a continuous ``quality`` in [1, Q] selects a per-channel gain
(the quantization step is 1/gain) and a rate-distortion lambda by
log-linear interpolation between Q learned/anchored points, so one set of
weights covers the whole range and rate control can bisect on quality.
"""
from __future__ import annotations

import contextlib
import contextvars
import math
import os
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn
from ..entropy_models import SCALE_MIN, EntropyBottleneck, GaussianConditional, scale_table, update_registered_buffers
from .. import int8net
from ..exact import ACT_BITS, SYNTH_ACT_BITS, SYNTH_WEIGHT_BITS, ExactSequential, to_grid
from ..layers import (BlockTransformAnalysis, BlockTransformSynthesis, HyperAnalysis, HyperSynthesis,
                      PostFilter, analysis_branch, dct_atoms, synthesis_branch)

# Rate-distortion trade-off of the 8 qualities (rate in bits/pixel, MSE on 0..255): geometric
# (x2.18) from 0.0004 to CompressAI's quality-7 lambda, so that quality 1 reaches ~0.15 bpp on
# Kodak; the top end belongs to the near-lossless mode, which codes the flow's residual instead.
DEFAULT_LAMBDAS = (0.0004, 0.00087, 0.0019, 0.0041, 0.0090, 0.0196, 0.0427, 0.0932)
# The log-scale range of the entropy parameters, and the 2^-24 grid of the exact decoder's
# per-quality scalars (1/gain, post-filter strength): the format's, defined with the torch-free decoder.
from ..decoder.model import LOG_SCALE_MAX, LOG_SCALE_MIN  # noqa: E402
from ..decoder.synthesis import GAIN_BITS  # noqa: E402


# The encoder's transforms only choose the latents: the entropy parameters and the whole decoder
# stay exact, so any precision there yields valid files. The model was trained under bf16 autocast,
# and on CPUs with bf16 matrix units (AVX512_BF16, AMX) bf16 convolutions ran 6x float32's rate:
# a 768x512 encode (fast model) took 0.25 s instead of 0.67 s. Kodak RD: see docs/RESULTS.md.
_ENCODER_AMP: contextvars.ContextVar = contextvars.ContextVar("anfcodec_encoder_amp", default=None)


def encoder_autocast_dtype(device_type: str = "cpu") -> torch.dtype | None:
    """bfloat16 where the hardware computes it natively, else None (float32). ANFCODEC_ENCODER_FP32=1
    keeps float32, e.g. to compare with or reproduce an earlier encode."""
    if os.environ.get("ANFCODEC_ENCODER_FP32") == "1":
        return None
    return torch.bfloat16 if native_bf16(device_type) else None


def native_bf16(device_type: str) -> bool:
    """Whether the hardware computes bfloat16 natively. Elsewhere it is emulated: on a 2-core AVX2
    EPYC an MS-ANFIC training step under bf16 autocast took 30 s, against 3.5 s in float32."""
    try:
        if device_type == "cuda":
            return torch.cuda.is_bf16_supported()
        return device_type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    except (AttributeError, RuntimeError):
        return False


def log_scale_thresholds(table: torch.Tensor) -> torch.Tensor:
    """floor(ln(scale) * 2^ACT_BITS) per table entry, int64: the decision points of scale_index."""
    return torch.floor(torch.log(table.double()) * 2**ACT_BITS).long()


@dataclass
class ANFICConfig:
    N: int = 128          # hidden width of the autoencoding transforms
    M: int = 256          # latent channels (224 luma + 16 + 16 chroma DCT atoms at start: 41 dB ceiling on Kodak)
    hyper_N: int = 128    # hyperlatent channels
    qe_width: int = 32    # post-filter width
    block: int = 16       # DCT warm-start block size (= total downsampling)
    lambdas: tuple = field(default_factory=lambda: DEFAULT_LAMBDAS)
    # "fixed": the latent is rounded on the integer grid and the hyperprior mean only shapes the
    # coding distribution, so a decoded image re-encodes to the same symbols. "mean": rounded
    # around the mean (the first shipped weights; kept so their files still decode).
    quantizer: str = "fixed"
    # The bit-exact synthesis: "fixed" (fine fixed-point grids, ``exact``) or "int8" (8-bit activations
    # from layer to layer, ``int8net``: twice as fast; scales stored in ``int8_scales``).
    synthesis: str = "fixed"

    arch_name = "anfic"
    missing_quantizer = "mean"  # what a config without the field means (written before it existed)

    @classmethod
    def from_dict(cls, d: dict) -> "ANFICConfig":
        d = dict(d)
        d.pop("arch", None)
        d.setdefault("quantizer", cls.missing_quantizer)
        if "lambdas" in d:
            d["lambdas"] = tuple(d["lambdas"])
        return cls(**d)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["lambdas"] = list(self.lambdas)
        d["arch"] = self.arch_name
        return d


@dataclass
class Symbols:
    """Everything the entropy coder writes for one image (batch of 1)."""
    hyper: torch.Tensor          # int32 [C_h, h, w], EntropyBottleneck symbols
    latent: torch.Tensor         # int32 [M, H, W], round(y) - round(mu) (fixed grid) or round(y - mu)
    scale_index: torch.Tensor    # int32 [M, H, W], index into the scale table
    offset: torch.Tensor         # float64 [M, H, W], mean of each symbol's coding distribution
    mu: torch.Tensor | None = None  # [1, M, H, W], the latent means both sides derived (saves decompress a rerun)


class ANFIC(nn.Module):
    arch = ANFICConfig.arch_name
    pad_multiple = 64  # 1/16 latent, 1/64 hyperlatent

    def __init__(self, config: ANFICConfig | None = None):
        super().__init__()
        cfg = config or ANFICConfig()
        self.config = cfg
        n, m, q = cfg.N, cfg.M, len(cfg.lambdas)
        self.g_a1 = BlockTransformAnalysis(n, m, cfg.block)
        self.g_s1 = BlockTransformSynthesis(n, m, cfg.block)
        self.g_a2 = analysis_branch(3, n, m)
        self.g_s2 = synthesis_branch(m, n, 3)
        self.h_a = HyperAnalysis(m, cfg.hyper_N)
        self.h_s = HyperSynthesis(cfg.hyper_N, m)
        self.entropy_bottleneck = EntropyBottleneck(cfg.hyper_N)
        self.gaussian_conditional = GaussianConditional(scale_table().float().tolist(), scale_bound=SCALE_MIN)
        self.post_filter = PostFilter(cfg.qe_width, q)
        self.register_buffer("log_lambdas", torch.log(torch.tensor(cfg.lambdas, dtype=torch.float32)))
        self.log_gain = nn.Parameter(self._initial_log_gains(m, q, cfg.block))
        self.register_buffer("log_scale_thresholds", log_scale_thresholds(scale_table()))
        self.autocast_dtype: torch.dtype | None = None  # bf16 for training on CPUs that have it
        self.encode_dtype: torch.dtype | None = None  # the zoo sets encoder_autocast_dtype(device)
        self._exact_h_s = self._last_hyper = None
        self._exact_synthesis = None
        if cfg.synthesis not in ("fixed", "int8"):
            raise ValueError(f"unknown synthesis {cfg.synthesis!r}")
        if cfg.synthesis == "int8":  # max |input| of each decoder convolution and GDN (set by export)
            self.register_buffer("int8_scales", torch.zeros(int8net.scale_count(self)))

    @classmethod
    def from_config(cls, config: dict) -> "ANFIC":
        return cls(ANFICConfig.from_dict(config))

    @staticmethod
    def _initial_log_gains(m: int, q: int, block: int) -> torch.Tensor:
        # JPEG-like start: step 40 (8-bit units) at quality 1 down to 8 at Q,
        # coarser for high frequencies and chroma. x is in [0, 1], hence 255.
        steps = torch.exp(torch.linspace(math.log(40.0), math.log(8.0), q))
        weight = torch.tensor([(1 + (k + l) / 4) * (1.5 if plane else 1.0) for plane, k, l in dct_atoms(m, block)])
        return torch.log(255.0 / (steps[:, None] * weight[None, :]))

    def init_from(self, state: dict) -> None:
        """Start training from shipped weights (a subclass may grow them into its own layout)."""
        self.load_state_dict(state)

    # -- quality conditioning -------------------------------------------------
    @property
    def num_qualities(self) -> int:
        return len(self.config.lambdas)

    def _interp(self, table: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
        """Linear interpolation of table rows at continuous 1-based qualities."""
        pos = (quality.float() - 1).clamp(0, self.num_qualities - 1)
        lo = pos.floor().long().clamp(max=self.num_qualities - 2)
        frac = (pos - lo.float()).view(-1, *([1] * (table.dim() - 1)))
        return table[lo] * (1 - frac) + table[lo + 1] * frac

    def retarget_qualities(self, lambdas: tuple) -> None:
        """Give the qualities new lambdas, keeping the model's behaviour at each lambda.

        Every per-quality table (latent gains, post-filter strength) is interpolated
        linearly in log-lambda, and extrapolated beyond the old end points, so that a
        trained model continues from its current operating points instead of a cold start.
        """
        old = self.log_lambdas.double()
        new = torch.log(torch.tensor(lambdas, dtype=torch.float64))
        hi = torch.searchsorted(old, new).clamp(1, len(old) - 1)
        frac = ((new - old[hi - 1]) / (old[hi] - old[hi - 1])).float()
        # A lambda the model already has keeps its rows bit for bit (interpolating at a fraction
        # of 1 - 1e-8 would not), so that adding qualities leaves the existing ones as they code.
        kept = {i: j for i, lam in enumerate(lambdas) for j, was in enumerate(self.config.lambdas)
                if math.isclose(lam, was, rel_tol=1e-9)}

        def remap(table: torch.Tensor) -> torch.Tensor:
            f = frac.view(-1, *([1] * (table.dim() - 1)))
            out = table[hi - 1] * (1 - f) + table[hi] * f
            for i, j in kept.items():
                out[i] = table[j]
            return out

        with torch.no_grad():
            self.log_gain.data = remap(self.log_gain.data)
            self.post_filter.strength.data = remap(self.post_filter.strength.data)
            log_lambdas = new.float()
            for i, j in kept.items():
                log_lambdas[i] = self.log_lambdas[j]
            self.log_lambdas.data = log_lambdas
        self.config.lambdas = tuple(lambdas)

    def gain(self, quality: torch.Tensor) -> torch.Tensor:
        return torch.exp(self._interp(self.log_gain, quality))[:, :, None, None]

    def lmbda(self, quality: torch.Tensor) -> torch.Tensor:
        return torch.exp(self._interp(self.log_lambdas, quality))

    # Refinement trades rate for re-encoding stability. With the 4.5 core-hour weights, on Kodak
    # 1-4 over 6 generations, plain analysis drifts 0.05 dB at lambda 0.0009, 0.10 at 0.0019,
    # 0.24 at 0.0041 and 0.38 at 0.009; at 0.009 a 0.3 step cuts that to 0.16 dB (+7% rate,
    # +0.28 dB), 0.5 to 0.08 (+12%, +0.41 dB) and 1.0 to 0.02 (+26%, +0.47 dB). The step ramps
    # log-linearly from 0 at lambda 0.002 (where drift is still small) to 1 at 0.04, so that rate
    # and PSNR stay continuous and monotone in quality (rate control bisects over them).
    REFINE_RAMP = (0.002, 0.04)

    def default_refine(self, quality: float) -> float:
        """Refinement for a quality, in steps: 0 at low lambdas, ramping to one full step."""
        lam = self.lmbda(torch.tensor([float(quality)])).item()
        lo, hi = self.REFINE_RAMP
        return min(1.0, max(0.0, math.log(lam / lo) / math.log(hi / lo)))

    # -- the flow ---------------------------------------------------------------
    def _amp(self, device_type: str):
        dtype = self.autocast_dtype or _ENCODER_AMP.get()
        return contextlib.nullcontext() if dtype is None else torch.autocast(device_type, dtype=dtype)

    @contextlib.contextmanager
    def _encoder_precision(self):
        """The encoder's transforms under ``encode_dtype`` autocast (in this thread only)."""
        token = _ENCODER_AMP.set(self.encode_dtype)
        try:
            yield
        finally:
            _ENCODER_AMP.reset(token)

    def _run(self, net: nn.Module, t: torch.Tensor) -> torch.Tensor:
        with self._amp(t.device.type):
            return net(t).float()

    def flow_forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """First coupling pair: x -> (x1, z2). ``x`` is centred ([-0.5, 0.5])."""
        z1 = self._run(self.g_a1, x)
        x1 = x - self._run(self.g_s1, z1)
        z2 = z1 + self._run(self.g_a2, x1)
        return x1, z2

    def encoder_flow(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``flow_forward`` as the encoder runs it: at its precision in eval mode, so that ``forward``
        evaluates what ``compress`` codes."""
        with contextlib.nullcontext() if self.training else self._encoder_precision():
            return self.flow_forward(x)

    def flow_inverse(self, z2: torch.Tensor, x2: torch.Tensor | None = None) -> torch.Tensor:
        """Invert both couplings from (z2, x2); x2 = None means the decoder's zero."""
        x1 = self._run(self.g_s2, z2)
        return self._invert_first_pair(z2, x1 if x2 is None else x1 + x2)

    def _invert_first_pair(self, z2: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        """(z2, x1) -> x: undo z2 = z1 + g_a2(x1), then x1 = x - g_s1(z1)."""
        z1 = z2 - self._run(self.g_a2, x1)
        return x1 + self._run(self.g_s1, z1)

    def entropy_parameters(self, h_hat: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, sigma) of the gained latent ``y``, fp32: float path in training, the exact path in eval.

        ``y`` matters only to models whose parameters also see already-decoded latent symbols
        (the checkerboard context model); ANFIC's come from the hyperlatent alone.
        """
        if self.training:
            return self._float_parameters(self._run(self.h_s, h_hat))
        mu, log_sigma = self.exact_entropy_parameters(h_hat, None if y is None else torch.round(y))
        return mu, torch.exp(log_sigma.float() * 2.0**-ACT_BITS)

    @staticmethod
    def _float_parameters(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, log_sigma = out.chunk(2, dim=1)
        return mu, torch.exp(log_sigma.clamp(LOG_SCALE_MIN, LOG_SCALE_MAX))

    def exact_entropy_parameters(self, h_hat: torch.Tensor, y_round: torch.Tensor | None = None):
        """(mu fp32, log-sigma as integers on the 2^-ACT_BITS grid), bit-identical on every platform.

        ``y_round`` (the rounded latent) is ignored here; context models use it.
        """
        return self._split_exact(self._exact_hyper(h_hat))

    def _exact_hyper(self, h_hat: torch.Tensor) -> torch.Tensor:
        """h_s in fixed point: (mu, log-sigma) stacked, integers on the 2^-ACT_BITS grid (not to be
        modified: the last result is kept, as a context model's decoder asks twice for the same
        hyperlatent, before and after its anchors; 0.04 s of the fast model's 768x512 decode)."""
        if self._exact_h_s is None:
            self._exact_h_s, self._last_hyper = ExactSequential(self.h_s.net), None
        last = self._last_hyper
        if last is not None and last[0].shape == h_hat.shape and last[0].device == h_hat.device \
                and last[0].dtype == h_hat.dtype and torch.equal(last[0], h_hat):
            return last[1]
        out = self._exact_h_s(to_grid(h_hat))
        self._last_hyper = (h_hat.clone(), out)
        return out

    @staticmethod
    def _split_exact(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, log_sigma = out.chunk(2, dim=1)
        log_sigma = log_sigma.clamp(LOG_SCALE_MIN * 2**ACT_BITS, LOG_SCALE_MAX * 2**ACT_BITS)
        return (mu * 2.0**-ACT_BITS).float(), log_sigma

    def forward(self, x: torch.Tensor, quality: torch.Tensor) -> dict:
        """Training pass. ``x`` in [0, 1], padded to ``pad_multiple``."""
        x = x - 0.5
        gain = self.gain(quality)
        x1, z2 = self.encoder_flow(x)
        y = z2 * gain
        h = self._run(self.h_a, y)
        h_hat, h_lik = self.entropy_bottleneck(h)
        mu, sigma = self.entropy_parameters(h_hat, y)
        if self.training or self.config.quantizer == "mean":
            _, y_lik = self.gaussian_conditional(y, sigma, means=mu)
        else:  # evaluation: the rate of exactly what compress codes, the integer grid
            gc = self.gaussian_conditional
            y_lik = gc.likelihood_lower_bound(gc._likelihood(torch.round(y), sigma, means=mu))
        y_q = torch.round(y) if self.config.quantizer == "fixed" else torch.round(y - mu) + mu
        y_hat = y + (y_q - y).detach()  # straight-through rounding for the transforms
        z2_hat = y_hat / gain
        x1_hat = self._run(self.g_s2, z2_hat)   # the decoder's x1 (x2 = 0); also defines x2
        x2 = x1 - x1_hat
        x_hat = self._post(self._invert_first_pair(z2_hat, x1_hat), quality) + 0.5
        return {"x_hat": x_hat, "x2": x2, "likelihoods": {"y": y_lik, "h": h_lik}}

    def _post(self, x: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
        strength = self._interp(self.post_filter.strength, quality)
        with self._amp(x.device.type):
            return self.post_filter(x, strength).float()

    # -- codec surface ------------------------------------------------------------
    @torch.inference_mode()
    def compress(self, x: torch.Tensor, quality: float, refine: float = 0) -> Symbols:
        """Image [1, 3, H, W] in [0, 1] (padded) -> integer symbols."""
        return self.quantize(self.refine(x, self.analyze(x), quality, refine), quality, image=x)

    _refine_against_float = False

    @contextlib.contextmanager
    def refining_against_float(self):
        """Refinement aimed at the float flow, even for an int8 model: measuring the int8 scales
        needs encodes before the int8 decoder exists (and the generations bench compares)."""
        previous, self._refine_against_float = self._refine_against_float, True
        try:
            yield
        finally:
            self._refine_against_float = previous

    @torch.inference_mode()
    def refine(self, x: torch.Tensor, z2: torch.Tensor, quality: float, steps: float) -> torch.Tensor:
        """Move the latent towards one whose decode reproduces ``x``.

        The decoder sets x2 and the augmented input to zero, so decode(analyze(x)) != x even
        before quantization. Fixed-point steps z2 += analyze(x) - analyze(decode(z2)) close
        that gap; a decoded image is their fixed point, which is what makes re-encoding stable.
        ``steps`` may be fractional: its fractional part scales the last step.

        With the int8 synthesis, ``decode`` is that synthesis itself: its 8-bit rounding moves
        the image further than the float flow's, and a refinement aimed at the float decode
        let Kodak images at q8 lose up to 2.4 dB over 6 generations instead of settling.
        """
        q = torch.tensor([quality], dtype=torch.float32, device=z2.device)
        target = z2
        sizes = [1.0] * int(steps) + ([steps - int(steps)] if steps > int(steps) else [])
        for size in sizes:
            if self.config.synthesis == "int8" and not self._refine_against_float:
                rec = self.synthesize_exact((z2 * self.gain(q)).double(), quality).float()
            else:
                with self._encoder_precision():
                    rec = (self._post(self.flow_inverse(z2), q) + 0.5).clamp(0, 1)
            z2 = z2 + size * (target - self.analyze(rec))
        return z2

    @torch.inference_mode()
    def analyze(self, x: torch.Tensor) -> torch.Tensor:
        """The quality-independent part of encoding: image -> latent z2 (rate control reuses it)."""
        return self.encoder_flow(x - 0.5)[1]

    @torch.inference_mode()
    def quantize(self, z2: torch.Tensor, quality: float, image: torch.Tensor | None = None) -> Symbols:
        """Latent z2 -> integer symbols at ``quality``. ``image``, the input z2 was analysed from,
        is for models whose coding decisions weigh distortion (MS-ANFIC's split); here it is unused."""
        q = torch.tensor([quality], dtype=torch.float32, device=z2.device)
        y = z2 * self.gain(q)
        h = self.h_a(y)
        medians = self.entropy_bottleneck._get_medians()
        h_sym = self.entropy_bottleneck.quantize(h, "symbols", medians)
        scale_index, mu = self.hyper_decode(h_sym, torch.round(y))
        y_sym = (torch.round(y) - torch.round(mu) if self.config.quantizer == "fixed" else torch.round(y - mu)).int()
        return Symbols(h_sym[0].int(), y_sym[0], scale_index[0], self.coding_offset(mu)[0], mu)

    def latent_passes(self, shape: tuple[int, int]) -> list[np.ndarray]:
        """The position masks (bool [H, W]) a latent stream visits in turn: here all at once."""
        return [np.ones(shape, dtype=bool)]

    def coding_offset(self, mu: torch.Tensor) -> torch.Tensor:
        """Mean of each symbol's coding distribution (float64): mu's fractional part on the fixed grid."""
        mu = mu.double()
        return mu - torch.round(mu) if self.config.quantizer == "fixed" else torch.zeros_like(mu)

    @torch.inference_mode()
    def hyper_decode(self, h_sym: torch.Tensor, y_round: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Hyperlatent symbols (and, for context models, the rounded latent decoded so far)
        -> (scale-table indices, latent means)."""
        if h_sym.dim() == 3:
            h_sym = h_sym[None]
        medians = self.entropy_bottleneck._get_medians()
        h_hat = self.entropy_bottleneck.dequantize(h_sym, medians)
        mu, log_sigma = self.exact_entropy_parameters(h_hat, y_round)
        return self.scale_index(log_sigma), mu

    def symbol_means(self, symbols: Symbols) -> torch.Tensor:
        """The means the decoder derives for ``symbols`` (what ``_grid_mean`` adds back):
        those the entropy decoder already built, else rebuilt from the hyperlatent."""
        return symbols.mu if symbols.mu is not None else self.derive_means(symbols)

    def derive_means(self, symbols: Symbols) -> torch.Tensor:
        return self.hyper_decode(symbols.hyper)[1]

    def scale_index(self, log_sigma: torch.Tensor) -> torch.Tensor:
        """Snap each (integer, fixed-point) log-scale up to the next table entry: integer comparisons only."""
        thresholds = self.log_scale_thresholds.to(log_sigma.device, torch.float64)
        return torch.searchsorted(thresholds[:-1].contiguous(), log_sigma.contiguous(), right=False).int()

    def train(self, mode: bool = True):
        self._exact_h_s = self._exact_synthesis = None  # weights may change; rebuild the fixed-point copies
        return super().train(mode)

    @torch.inference_mode()
    def decompress(self, symbols: Symbols, quality: float) -> torch.Tensor:
        """Integer symbols -> reconstruction [1, 3, H, W] in [0, 1] (padded size), float64.

        Runs the inverse flow and post-filter in fixed point (see ``exact``), so that
        every machine decodes the same pixels; ``decompress_float`` is the float path.
        """
        mu = self.symbol_means(symbols)
        return self.synthesize_exact(symbols.latent[None].double() + self._grid_mean(mu), quality)

    def synthesize_exact(self, y_hat: torch.Tensor, quality: float) -> torch.Tensor:
        """Dequantized latent (float64, on a dyadic grid no finer than 2^-14) -> image, in fixed point."""
        net = self._exact_nets()
        A = SYNTH_ACT_BITS
        inv_gain = torch.tensor(self._fixed_point_table(self.log_gain, quality, GAIN_BITS, exp_neg=True),
                                dtype=torch.float64, device=y_hat.device).view(1, -1, 1, 1)
        z2 = torch.round(y_hat * inv_gain * 2.0 ** (A - GAIN_BITS))   # integer products: exact
        x1 = net["g_s2"](z2)
        z1 = z2 - net["g_a2"](x1)
        x = x1 + net["g_s1_linear"](z1) + net["g_s1_branch"](z1)
        strength = self._fixed_point_table(self.post_filter.strength[:, None], quality, GAIN_BITS)[0]
        x = x + torch.round(net["post"](x) * strength * 2.0**-GAIN_BITS)
        return (x * 2.0**-A + 0.5).clamp(0, 1)

    @torch.inference_mode()
    def decompress_float(self, symbols: Symbols, quality: float) -> torch.Tensor:
        """The float32 decoder: faster, but its pixels may differ by a level between machines."""
        mu = self.symbol_means(symbols)
        return self.synthesize_float(symbols.latent[None].float() + self._grid_mean(mu).float(), quality)

    def synthesize_float(self, y_hat: torch.Tensor, quality: float) -> torch.Tensor:
        q = torch.tensor([quality], dtype=torch.float32, device=y_hat.device)
        x = self.flow_inverse(y_hat / self.gain(q))
        return (self._post(x, q) + 0.5).clamp(0, 1)

    def _grid_mean(self, mu: torch.Tensor) -> torch.Tensor:
        """What the decoder adds to a symbol: round(mu) on the fixed grid, mu itself for the legacy quantizer."""
        return torch.round(mu).double() if self.config.quantizer == "fixed" else mu.double()

    def decoder_program(self) -> tuple[dict, dict]:
        """What the torch-free decoder (``anfcodec.decoder``) needs beyond the weights file: the
        decoding networks as ``lowering.describe`` states them, and the tables it reads (numpy)."""
        from ..lowering import describe
        names = {m: n for n, m in self.named_modules()}
        arrays: dict = {}
        eb, gc = self.entropy_bottleneck, self.gaussian_conditional
        program = {"arch": self.arch, "synthesis": self.config.synthesis, "quantizer": self.config.quantizer,
                   "num_qualities": self.num_qualities, "pad_multiple": self.pad_multiple,
                   "block": self.config.block, "hyper_N": self.config.hyper_N, "M": self.config.M,
                   "hyper": describe(self.h_s.net, names, arrays),
                   "synthesis_networks": {k: describe(v, names, arrays) for k, v in self.decoder_networks().items()},
                   "synthesis_order": list(self.decoder_networks())}  # int8_scales are stored in this order
        tables = {"log_gain": self.log_gain, "post_strength": self.post_filter.strength,
                  "scale_table": gc.scale_table, "log_scale_thresholds": self.log_scale_thresholds,
                  "hyper_cdf": eb._quantized_cdf, "hyper_offset": eb._offset, "hyper_cdf_length": eb._cdf_length,
                  "hyper_medians": eb._get_medians()}
        if self.config.synthesis == "int8":
            tables["int8_scales"] = self.int8_scales
        arrays.update({f"tables.{k}": v.detach().cpu().numpy() for k, v in tables.items()})
        return program, arrays

    def decoder_networks(self) -> dict[str, nn.Module]:
        """The networks the bit-exact synthesis runs, by the names ``synthesize_exact`` uses (in this
        order the int8 synthesis stores its scales)."""
        return {"g_s2": self.g_s2, "g_a2": self.g_a2, "g_s1_linear": self.g_s1.linear,
                "g_s1_branch": self.g_s1.branch, "post": self.post_filter.net}

    def _exact_nets(self) -> dict:
        if self._exact_synthesis is None and self.config.synthesis == "int8":
            self._exact_synthesis = int8net.build(self)
        if self._exact_synthesis is None:
            self._exact_synthesis = {name: ExactSequential(net, SYNTH_ACT_BITS, SYNTH_WEIGHT_BITS)
                                     for name, net in self.decoder_networks().items()}
        return self._exact_synthesis

    def _fixed_point_table(self, table: torch.Tensor, quality: float, bits: int, exp_neg: bool = False) -> list[float]:
        """Row interpolation at ``quality`` (optionally exp(-value)) on the 2^-bits grid, as integers.

        Scalar Python float64 arithmetic: no vectorized kernel whose rounding could vary by CPU.
        """
        from ..decoder.synthesis import fixed_point_table
        return fixed_point_table(table.detach().double().cpu().numpy(), quality, bits, exp_neg)

    def scale_values(self) -> torch.Tensor:
        """The snapped Gaussian scales, float64, indexable by ``scale_index``."""
        return self.gaussian_conditional.scale_table.double()

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        # The frozen entropy tables are empty until update_tables(); size them from the file.
        names = ["_quantized_cdf", "_offset", "_cdf_length"]
        for module, prefix, buffers in ((self.entropy_bottleneck, "entropy_bottleneck", names),
                                        (self.gaussian_conditional, "gaussian_conditional", names + ["scale_table"])):
            present = [b for b in buffers if f"{prefix}.{b}" in state_dict]
            if present:
                update_registered_buffers(module, prefix, present, state_dict, policy="resize")
        if "log_scale_thresholds" not in state_dict:  # checkpoints from before the exact path
            table = state_dict.get("gaussian_conditional.scale_table", self.gaussian_conditional.scale_table)
            state_dict = {**state_dict, "log_scale_thresholds": log_scale_thresholds(table)}
        self.log_scale_thresholds = torch.empty_like(state_dict["log_scale_thresholds"])
        self._exact_h_s = self._exact_synthesis = None
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def aux_loss(self) -> torch.Tensor:
        return self.entropy_bottleneck.loss()

    def update_tables(self) -> None:
        """Freeze the hyperlatent CDF tables; they ship inside the weights."""
        self.entropy_bottleneck.update(force=True)
        self.gaussian_conditional.update_scale_table(scale_table().float().tolist(), force=True)
        self.log_scale_thresholds = log_scale_thresholds(scale_table())
        self._exact_h_s = self._exact_synthesis = None
