"""MS-ANFIC: the checkerboard model with a two-scale latent, a latent split network and per-scale
conditional hyperpriors.

The flow (``z2``, the gained latent ``y = z2 * gain`` at 1/16) and the fine scale's two-pass
checkerboard context are the checkerboard model's. On top of them::

    y_c   = split_down(y)                 coarse latent, 1/32: the latent split network
    split = 1 per 32x32-pixel region coded at the fine scale, 0 at the coarse scale
    coarse regions: y_hat = split_up(round(y_c))     under the coarse hyperprior (h_a_c, h_s_c)
    fine regions:   y_hat = round(y)                  under the fine hyperprior and the context,
    v = split_up(round(y_c) * (1 - split))            conditioned on the coarse scale: v joins the
                                                      input of h_a and of h_s's last layer

Each region is coded at exactly one scale; the other scale's positions there are masked out
and cost nothing. The latent split network (``split_down``) and the coarse synthesis
(``split_up``) are each a fixed 2x2 orthonormal projection of the lowest-frequency channels
plus a nonlinear branch (convolutions and leaky ReLUs, as in the paper's LSUnit type B) whose
last layer starts at zero. The checkerboard context sees the decoded anchors of fine regions only.

The split map is the encoder's decision, on true costs (``choose_split``): per region, the
entropy models' bits of each scale's symbols (the coarse hyperlatent's share included) plus
lambda times the squared error of the decoded pixels against the input image; then the whole
image coded with that map must beat all-fine in real bits and decoded pixels, else the image is
coded all-fine. It is
side information (one bit per region, range-coded), so the decoder needs no split network.
Training makes the same per-region decision with its float networks and also trains the coarse
scale everywhere (a small auxiliary term), so that it becomes competitive where it is not yet
chosen.

Grown from checkerboard weights (``from_single_scale``), the conditioning weights start at zero
and an untrained coarse scale loses every whole-image comparison: at step 0 the model codes
exactly as its base.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..entropy_models import EntropyBottleneck
from ..exact import ACT_BITS, SYNTH_ACT_BITS, SYNTH_WEIGHT_BITS, WEIGHT_BITS, ExactnessError, ExactSequential, to_grid
from ..layers import conv, deconv, dct_atoms
from .anfic import LOG_SCALE_MAX, LOG_SCALE_MIN, Symbols
from .checkerboard import ANFICCheckerboard, CheckerboardConfig, anchor_mask

REGION = 32  # pixels per split-map cell side: one coarse latent position


@dataclass
class MSANFICConfig(CheckerboardConfig):
    coarse_M: int = 128       # coarse latent channels
    coarse_hyper_N: int = 64  # coarse hyperlatent channels
    split_N: int = 128        # hidden width of the split network's nonlinear branches
    aux_weight: float = 0.2   # training: weight of coding the coarse scale everywhere
    # Training: at least this fraction of each crop's regions is coded coarse, those nearest to
    # being cheaper coarse, even where fine costs less. The auxiliary term runs on a detached latent, so without
    # coarse regions in the main term the flow never learns to shape its latent for the coarse scale.
    coarse_explore: float = 0.0
    # Ablation of fix (a) only (issue 22's row for it): True restores the pre-fix auxiliary term, whose
    # distortion divides by the undetached gains. Releases train with False.
    aux_gain_gradient: bool = False
    # Ablation of fix (d) only: False keeps the split networks' nonlinear branches at their start,
    # zero, so the coarse scale is the linear 2x2 projection alone (grow it from a single-scale
    # model, whose growth starts the branches at zero). Releases train with True.
    split_branches: bool = True

    arch_name = "ms-anfic"
    missing_quantizer = "fixed"  # every MS-ANFIC codes on the fixed grid


@dataclass
class MSSymbols:
    """Everything the entropy coder writes for one image: both scales and the split map."""
    fine: Symbols      # latent symbols of coarse regions are zero and not coded
    coarse: Symbols    # latent symbols of fine regions are zero and not coded
    split: torch.Tensor  # uint8 [H/2, W/2] (latent units): 1 = the region is coded at the fine scale


def nearest_to_coarse(ratio: torch.Tensor, fraction: float) -> torch.Tensor:
    """1 at the ``fraction`` of each image's regions [B, 1, h, w] with the lowest coarse/fine cost ratio."""
    flat = ratio.flatten(1)
    k = int(round(fraction * flat.shape[1]))
    marked = torch.zeros_like(flat)
    if k:
        marked.scatter_(1, flat.topk(k, dim=1, largest=False).indices, 1.0)
    return marked.view_as(ratio)


class ProjectionPlusBranch(nn.Module):
    """``linear(x) + branch(x)``: a fixed-start linear map plus a nonlinear branch whose last layer
    starts at zero, so that the sum starts as the linear map."""

    def __init__(self, linear: nn.Module, branch: nn.Sequential):
        super().__init__()
        self.linear, self.branch = linear, branch
        nn.init.zeros_(self.branch[-1].weight)
        nn.init.zeros_(self.branch[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) + self.branch(x)


def split_down(m: int, mc: int, hidden: int) -> ProjectionPlusBranch:
    """The latent split network: y [M, H, W] -> y_c [M_c, H/2, W/2]: a 2x2 orthonormal projection
    (set by ``MSANFIC._initial_split``) plus a nonlinear branch."""
    return ProjectionPlusBranch(nn.Conv2d(m, mc, 2, stride=2, bias=False),
                                nn.Sequential(conv(m, hidden, 3, 1), nn.LeakyReLU(inplace=True),
                                              nn.Conv2d(hidden, hidden, 2, stride=2), nn.LeakyReLU(inplace=True),
                                              conv(hidden, mc, 3, 1)))


def split_up(m: int, mc: int, hidden: int) -> ProjectionPlusBranch:
    """The coarse synthesis: y_c -> its fine-latent reconstruction [M, H, W]: the projection's
    transpose plus a nonlinear branch. The decoder runs it in fixed point (``ExactSplitUp``)."""
    return ProjectionPlusBranch(nn.ConvTranspose2d(mc, m, 2, stride=2, bias=False),
                                nn.Sequential(conv(mc, hidden, 3, 1), nn.LeakyReLU(inplace=True),
                                              nn.ConvTranspose2d(hidden, hidden, 2, stride=2),
                                              nn.LeakyReLU(inplace=True), conv(hidden, m, 3, 1)))


class ExactSplitUp:
    """``split_up`` in fixed point: integers on the 2^-act_bits grid in and out, both parts on one
    grid, summed."""

    def __init__(self, up: ProjectionPlusBranch, act_bits: int, weight_bits: int):
        self.linear = ExactSequential(up.linear, act_bits, weight_bits)
        self.branch = ExactSequential(up.branch, act_bits, weight_bits)

    def __call__(self, a: torch.Tensor) -> torch.Tensor:
        return self.linear(a) + self.branch(a)


class MSANFIC(ANFICCheckerboard):
    arch = MSANFICConfig.arch_name
    # Modules that checkerboard weights do not have: training gives them the larger learning rate.
    fresh_modules = ("split_down.", "split_up.", "h_a_c.", "h_s_c.", "entropy_bottleneck_c.")

    def __init__(self, config: MSANFICConfig | None = None):
        cfg = config or MSANFICConfig()
        super().__init__(cfg)
        m, mc, nh = cfg.M, cfg.coarse_M, cfg.hyper_N
        # Conditional fine hyperprior: v (M channels) joins h_a's input and h_s's last layer.
        self.h_a.net[0] = conv(2 * m, nh, 3, 1)
        self.h_s.net[4] = conv(nh * 3 // 2 + m, 2 * m, 3, 1)
        self.split_down = split_down(m, mc, cfg.split_N)
        self.split_up = split_up(m, mc, cfg.split_N)
        with torch.no_grad():
            self.split_down.linear.weight.copy_(self._initial_split(m, mc, cfg.block))
            self.split_up.linear.weight.copy_(self.split_down.linear.weight)
        if not cfg.split_branches:  # Adam without weight decay leaves a parameter whose gradient is zero where it is
            for p in [*self.split_down.branch.parameters(), *self.split_up.branch.parameters()]:
                p.register_hook(torch.zeros_like)
        self.h_a_c = nn.Sequential(conv(mc, cfg.coarse_hyper_N, 3, 1), nn.LeakyReLU(inplace=True),
                                   conv(cfg.coarse_hyper_N, cfg.coarse_hyper_N))
        self.h_s_c = nn.Sequential(deconv(cfg.coarse_hyper_N, cfg.coarse_hyper_N), nn.LeakyReLU(inplace=True),
                                   conv(cfg.coarse_hyper_N, 2 * mc, 3, 1))
        self.entropy_bottleneck_c = EntropyBottleneck(cfg.coarse_hyper_N)
        self._exact_ms = None

    def fresh_masks(self) -> dict[str, torch.Tensor]:
        """The parts of base modules that growing added: the conditional hyperprior's input columns
        for v (h_a's first layer, h_s's last). True where an entry is new; training with the base
        frozen trains these entries and no others of those tensors."""
        m, nh = self.config.M, self.config.hyper_N
        masks = {}
        for name, old in (("h_a.net.0.weight", m), ("h_s.net.4.weight", nh * 3 // 2)):
            w = self.get_parameter(name)
            mask = torch.zeros_like(w, dtype=torch.bool)
            mask[:, old:] = True
            masks[name] = mask
        return masks

    @classmethod
    def from_config(cls, config: dict) -> "MSANFIC":
        return cls(MSANFICConfig.from_dict(config))

    @staticmethod
    def _initial_split(m: int, mc: int, block: int) -> torch.Tensor:
        """[mc, m, 2, 2]: the coarse channels are 2x2 orthonormal averages of the lowest-frequency
        fine channels (luma first, then all chroma), so linear_up(linear_down(y)) is a projection."""
        atoms = dct_atoms(m, block)
        luma = [i for i, (plane, _, _) in enumerate(atoms) if plane == 0]
        chroma = [i for i, (plane, _, _) in enumerate(atoms) if plane != 0]
        keep = (luma[: max(0, mc - len(chroma))] + chroma)[:mc]
        w = torch.zeros(mc, m, 2, 2)
        for k, c in enumerate(keep):
            w[k, c] = 0.5
        return w

    @classmethod
    def from_single_scale(cls, state: dict, config: dict) -> "MSANFIC":
        """An MS-ANFIC whose fine scale is the given checkerboard weights; new conditioning starts at zero."""
        model = cls(MSANFICConfig.from_dict({**config, "arch": cls.arch}))
        model.init_from(state)
        return model

    def init_from(self, state: dict) -> None:
        """Load MS-ANFIC weights, or grow checkerboard weights (no ``split_down``) into this model."""
        if any(k.startswith("split_down.") for k in state):
            self.load_state_dict(state)
            return
        if "context_prediction.weight" not in state:
            raise ValueError("MS-ANFIC grows from checkerboard-context weights (anfic-ckbd)")
        own = self.state_dict()
        merged = dict(own)
        for k, v in state.items():
            if k in ("h_a.net.0.weight", "h_s.net.4.weight"):  # widened inputs: old part, zeros for v
                w = torch.zeros_like(own[k])
                w[:, : v.shape[1]] = v
                merged[k] = w
            elif k in own or k.startswith(("entropy_bottleneck.", "gaussian_conditional.")):
                merged[k] = v
        self.load_state_dict(merged)

    # -- networks shared by training, encoder and decoder ------------------------------
    def _fine_hyper_synthesis(self, h_hat: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        body = self._run(self.h_s.net[:4], h_hat)
        return self._run(self.h_s.net[4], torch.cat([body, v], 1))

    def _fine_float(self, h_hat: torch.Tensor, v: torch.Tensor, y_hat: torch.Tensor, up: torch.Tensor):
        """Float (mu, sigma) of the fine latent: the conditional hyperprior, and at the non-anchors
        the context of the fine regions' anchors."""
        base = self._fine_hyper_synthesis(h_hat, v)
        anchor = anchor_mask(*y_hat.shape[-2:], device=y_hat.device).to(y_hat.dtype)
        ctx = self._run(self.context_prediction, y_hat * anchor * up)
        return self._float_parameters(base + self._run(self.entropy_fusion, torch.cat([base, ctx], 1)) * (1 - anchor))

    def _coarse_float(self, hc_hat: torch.Tensor):
        return self._float_parameters(self._run(self.h_s_c, hc_hat))

    def _exact(self) -> dict:
        if self._exact_ms is None:
            self._exact_ms = {"h_s_body": ExactSequential(self.h_s.net[:4]), "h_s_head": ExactSequential(self.h_s.net[4]),
                              "h_s_c": ExactSequential(self.h_s_c),
                              "context": ExactSplitUp(self.split_up, ACT_BITS, WEIGHT_BITS),
                              "split_up": ExactSplitUp(self.split_up, SYNTH_ACT_BITS, SYNTH_WEIGHT_BITS)}
        return self._exact_ms

    @torch.inference_mode()
    def coarse_params(self, hc_sym: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Coarse hyperlatent symbols -> (scale indices, means) of the coarse latent, bit-exact."""
        hc_sym = hc_sym if hc_sym.dim() == 4 else hc_sym[None]
        eb = self.entropy_bottleneck_c
        mu, log_sigma = self._split_exact(self._exact()["h_s_c"](to_grid(eb.dequantize(hc_sym, eb._get_medians()))))
        return self.scale_index(log_sigma), mu

    @torch.inference_mode()
    def context(self, yc_hat: torch.Tensor) -> torch.Tensor:
        """Masked dequantized coarse latent (integers) -> v on the 2^-ACT_BITS grid, as integers."""
        return self._exact()["context"](to_grid(yc_hat if yc_hat.dim() == 4 else yc_hat[None]))

    @torch.inference_mode()
    def hyper_decode(self, h_sym: torch.Tensor, v_grid: torch.Tensor | None = None,
                     y_round: torch.Tensor | None = None, up: torch.Tensor | None = None):
        """Fine hyperlatent symbols and the coarse context -> (scale indices, means), bit-exact.

        Without ``y_round``, the anchors' parameters; with it (its anchors in the fine regions
        ``up`` are read), every position's."""
        h_sym = h_sym if h_sym.dim() == 4 else h_sym[None]
        eb = self.entropy_bottleneck
        key = (h_sym, v_grid)
        last = self.__dict__.get("_last_fine")
        if last is not None and all(a is b or (a is not None and b is not None and a.shape == b.shape
                                                and torch.equal(a, b)) for a, b in zip(last[0], key)):
            out = last[1]
        else:
            body = self._exact()["h_s_body"](to_grid(eb.dequantize(h_sym, eb._get_medians())))
            v = body.new_zeros(body.shape[0], self.config.M, *body.shape[2:]) if v_grid is None else v_grid
            out = self._exact()["h_s_head"](torch.cat([body, v], 1))
            self._last_fine = (tuple(None if t is None else t.clone() for t in key), out)
        if y_round is not None:
            out = out.clone()
            anchor = anchor_mask(*y_round.shape[-2:], device=y_round.device).double()
            mask = anchor if up is None else anchor * up.double()
            for rows, cols, correction in self._exact_corrections(to_grid(y_round.double() * mask), out):
                out[:, :, rows, cols] += correction
        mu, log_sigma = self._split_exact(out)
        return self.scale_index(log_sigma), mu

    def derive_means(self, symbols: Symbols) -> torch.Tensor:
        raise NotImplementedError("MS-ANFIC's fine means depend on the coarse scale: use dequantize")

    # -- the split decision --------------------------------------------------------------
    def _bits(self, values: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        gc = self.gaussian_conditional
        return -torch.log2(gc.likelihood_lower_bound(gc._likelihood(values, sigma, means=mu)))

    @staticmethod
    def _up(split: torch.Tensor) -> torch.Tensor:
        return F.interpolate(split, scale_factor=2, mode="nearest")

    def _decode_float(self, y_hat: torch.Tensor, gain: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
        """The float decoder's image (in [0, 1]) of a dequantized latent."""
        z2_hat = y_hat / gain
        return self._post(self._invert_first_pair(z2_hat, self._run(self.g_s2, z2_hat)), quality) + 0.5

    def _pixel_error(self, y_hat: torch.Tensor, gain: torch.Tensor, quality: torch.Tensor,
                     target: torch.Tensor) -> torch.Tensor:
        """Squared error [B, 1, H, W] (summed over colours) of the float decode of ``y_hat`` against ``target``."""
        return ((self._decode_float(y_hat, gain, quality).clamp(0, 1) - target) ** 2).sum(1, keepdim=True)

    def region_costs(self, target: torch.Tensor, y: torch.Tensor, y_c: torch.Tensor, gain: torch.Tensor,
                     lmbda: torch.Tensor, quality: torch.Tensor,
                     fine_error: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(fine, coarse) cost of every region [B, 1, H/2, W/2], in bits: the entropy models' bits of
        that scale's symbols there (all-fine hyperprior and context for the fine scale; the coarse
        scale's with its hyperlatent's bits shared out over the regions) plus lambda * 255^2 / 3
        times the region's pixel squared error after the float decoder, against ``target``. Where the
        coarse bits alone cost more than fine coding in every region, the coarse cost is those bits.
        ``fine_error``: the all-fine decode's ``_pixel_error``, if the caller has it.
        """
        medians = self.entropy_bottleneck._get_medians()
        zeros = torch.zeros_like(y)
        ones = torch.ones_like(y[:, :1])
        y_round = torch.round(y)
        h0 = self.entropy_bottleneck.quantize(self._run(self.h_a, torch.cat([y, zeros], 1)), "dequantize", medians)
        mu0, sigma0 = self._fine_float(h0, zeros, y_round, ones)
        fine_bits = F.avg_pool2d(self._bits(y_round, mu0, sigma0).sum(1, keepdim=True), 2) * 4
        ebc = self.entropy_bottleneck_c
        hc, hc_lik = ebc(self._run(self.h_a_c, y_c), training=False)
        mu_c, sigma_c = self._coarse_float(hc)
        yc_round = torch.round(y_c)
        hc_share = (-torch.log2(hc_lik)).flatten(1).sum(1).view(-1, 1, 1, 1) / (y_c.shape[-2] * y_c.shape[-1])
        coarse_bits = self._bits(yc_round, mu_c, sigma_c).sum(1, keepdim=True) + hc_share
        w = (lmbda * 255.0**2 / 3).view(-1, 1, 1, 1) * REGION**2

        if fine_error is None:
            fine_error = self._pixel_error(y_round, gain, quality, target)
        cost_f = fine_bits + w * F.avg_pool2d(fine_error, REGION)
        if (coarse_bits >= cost_f).all():  # coarse loses everywhere on its bits alone: skip its decode
            return cost_f, coarse_bits      # (a lower bound of its cost, with the same decision)
        coarse_error = self._pixel_error(self.split_up(yc_round), gain, quality, target)
        return cost_f, coarse_bits + w * F.avg_pool2d(coarse_error, REGION)

    @torch.inference_mode()
    def choose_split(self, y: torch.Tensor, y_c: torch.Tensor, quality: float,
                     image: torch.Tensor | None = None) -> torch.Tensor:
        """The encoder's split map [1, 1, H/2, W/2] (1 = fine) on true costs.

        Per region, the cheaper scale by ``region_costs``; then the whole image: the map is kept
        only if coding it costs fewer bits (every chunk's symbols, by the coding tables) plus
        lambda * 255^2 / 3 * squared error of the decoded pixels than coding it all-fine.
        Both are judged against ``image``, the input the file is judged by. Without it, the
        decoder's image of the unquantized latent stands in; that stand-in flatters coarse
        regions (on Kodak q5 it accepted maps whose files cost 2 kbit more than all-fine:
        ``bench/ms_split_decision.py``), so encoders pass the image."""
        q = torch.tensor([quality], dtype=torch.float32, device=y.device)
        gain, lmbda = self.gain(q), self.lmbda(q)
        target = self._decode_float(y, gain, q).clamp(0, 1) if image is None else image
        # All-fine decodes round(y) exactly: one decode serves the regions' and the whole image's costs.
        fine_error = self._pixel_error(torch.round(y), gain, q, target)
        cost_f, cost_c = self.region_costs(target, y, y_c, gain, lmbda, q, fine_error)
        split = (cost_f <= cost_c).float()
        if split.all():
            return split
        fine = torch.ones_like(split)
        costs = [self.coded_cost(self._symbols(y, y_c, fine), target, quality, float(fine_error.sum())),
                 self.coded_cost(self._symbols(y, y_c, split), target, quality)]
        return split if costs[1] < costs[0] else fine

    def coded_cost(self, sym: MSSymbols, target: torch.Tensor, quality: float, error: float | None = None) -> float:
        """Bits of everything ``sym`` codes (split map at one bit per region when it has a coarse region)
        plus lambda * 255^2 / 3 times the squared error of its float decode against ``target``
        (``error``, if the caller has it)."""
        q = torch.tensor([quality], dtype=torch.float32, device=target.device)
        bits = sum(float((-torch.log2(v)).sum()) for v in self.likelihoods(sym).values())
        bits += 0 if sym.split.all() else sym.split.numel()
        if error is None:
            error = float(self._pixel_error(self.dequantize(sym).float(), self.gain(q), q, target).sum())
        return bits + float(self.lmbda(q)) * 255.0**2 / 3 * error

    # -- training ---------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, quality: torch.Tensor) -> dict:
        """Training pass (and in eval mode, the rate and reconstruction of exactly what is coded)."""
        if not self.training:
            return self._forward_eval(x, quality)
        gain, lmbda = self.gain(quality), self.lmbda(quality)
        x1, z2 = self.flow_forward(x - 0.5)
        y = z2 * gain
        y_c = self.split_down(y)
        with torch.no_grad():  # the encoder's per-region decision, on the float networks
            cost_f, cost_c = self.region_costs(x, y, y_c, gain, lmbda, quality)
            split = (cost_f <= cost_c).float()
            if self.config.coarse_explore > 0:
                split = split * (1 - nearest_to_coarse(cost_c / cost_f, self.config.coarse_explore))
        up, coarse = self._up(split), 1 - split
        hc_hat, hc_lik = self.entropy_bottleneck_c(self._run(self.h_a_c, y_c * coarse))
        mu_c, sigma_c = self._coarse_float(hc_hat)
        yc_hat = y_c + (torch.round(y_c) - y_c).detach()
        v = self.split_up(yc_hat * coarse)
        y_ste = y + (torch.round(y) - y).detach()
        h_hat, h_lik = self.entropy_bottleneck(self._run(self.h_a, torch.cat([y * up, v], 1)))
        mu, sigma = self._fine_float(h_hat, v, y_ste, up)
        _, y_lik = self.gaussian_conditional(y, sigma, means=mu)
        _, yc_lik = self.gaussian_conditional(y_c, sigma_c, means=mu_c)
        y_hat = up * y_ste + (1 - up) * v
        x_hat, x2 = self._reconstruct(x1, y_hat, gain, quality)
        # The coarse scale coded everywhere, hyperlatent included, on a detached copy of y: it
        # keeps learning where the split does not pick it yet, without pulling on the flow.
        yd = y.detach()
        ycd = self.split_down(yd)
        hcd_hat, hcd_lik = self.entropy_bottleneck_c(self._run(self.h_a_c, ycd))
        mu_cd, sigma_cd = self._coarse_float(hcd_hat)
        rec_d = self.split_up(ycd + (torch.round(ycd) - ycd).detach())
        aux_bits = (self._bits(ycd, mu_cd, sigma_cd).flatten(1).sum(1) - torch.log2(hcd_lik).flatten(1).sum(1))
        # The gains are detached too: with a detached numerator, (.../gain)^2 would send every gain
        # only a push towards finer steps, strongest where the coarse projection drops detail.
        aux_gain = gain if self.config.aux_gain_gradient else gain.detach()
        aux_err = (((rec_d - yd) / aux_gain) ** 2).flatten(1).sum(1)
        pixels = x.shape[-2] * x.shape[-1]
        aux = self.config.aux_weight * (aux_bits + lmbda * 255.0**2 / 3 * aux_err) / pixels
        one = torch.ones_like
        any_coarse = (split < 1).flatten(1).any(1).view(-1, 1, 1, 1)  # else the coarse scale is not coded
        return {"x_hat": x_hat, "x2": x2, "aux_loss": aux, "split": split,
                "likelihoods": {"y": torch.where(up > 0, y_lik, one(y_lik)), "h": h_lik,
                                "y_coarse": torch.where(split > 0, one(yc_lik), yc_lik),
                                "h_coarse": torch.where(any_coarse, hc_lik, one(hc_lik))}}

    def _reconstruct(self, x1: torch.Tensor, y_hat: torch.Tensor, gain: torch.Tensor, quality: torch.Tensor):
        z2_hat = y_hat / gain
        x1_hat = self._run(self.g_s2, z2_hat)
        return self._post(self._invert_first_pair(z2_hat, x1_hat), quality) + 0.5, x1 - x1_hat

    @torch.no_grad()
    def _forward_eval(self, x: torch.Tensor, quality: torch.Tensor) -> dict:
        """Per image: the symbols ``quantize`` codes, their likelihoods and the float reconstruction."""
        outs = [self._forward_eval_one(x[i:i + 1], float(q)) for i, q in enumerate(quality)]
        cat = {k: torch.cat([o["likelihoods"][k] for o in outs]) for k in outs[0]["likelihoods"]}
        return {"x_hat": torch.cat([o["x_hat"] for o in outs]), "x2": torch.cat([o["x2"] for o in outs]),
                "split": torch.cat([o["split"] for o in outs]), "likelihoods": cat}

    def _forward_eval_one(self, x: torch.Tensor, quality: float) -> dict:
        x1, z2 = self.encoder_flow(x - 0.5)
        sym = self.quantize(z2, quality, image=x)
        q = torch.tensor([quality])
        x_hat, x2 = self._reconstruct(x1, self.dequantize(sym).float(), self.gain(q), q)
        return {"x_hat": x_hat, "x2": x2, "split": sym.split[None, None].float(), "likelihoods": self.likelihoods(sym)}

    @torch.no_grad()
    def likelihoods(self, sym: MSSymbols) -> dict:
        """Likelihood of every coded symbol under the coded tables (1 where a scale is masked out)."""
        tables = self.scale_values().float()
        split = sym.split[None, None].float()
        up = self._up(split)
        gc = self.gaussian_conditional

        def latent(s: Symbols, coded: torch.Tensor) -> torch.Tensor:
            lik = gc._likelihood(s.latent[None].float(), tables[s.scale_index.long()][None], means=s.offset[None].float())
            return torch.where(coded > 0, gc.likelihood_lower_bound(lik), torch.ones_like(lik))

        def hyper(eb, h_sym: torch.Tensor) -> torch.Tensor:
            return eb(eb.dequantize(h_sym[None], eb._get_medians()), training=False)[1]
        h_coarse = hyper(self.entropy_bottleneck_c, sym.coarse.hyper)
        if sym.split.all():
            h_coarse = torch.ones_like(h_coarse)
        return {"y": latent(sym.fine, up), "h": hyper(self.entropy_bottleneck, sym.fine.hyper),
                "y_coarse": latent(sym.coarse, 1 - split), "h_coarse": h_coarse}

    def aux_loss(self) -> torch.Tensor:
        return self.entropy_bottleneck.loss() + self.entropy_bottleneck_c.loss()

    # -- codec surface ------------------------------------------------------------------------
    @torch.inference_mode()
    def quantize(self, z2: torch.Tensor, quality: float, split: torch.Tensor | None = None,
                 image: torch.Tensor | None = None) -> MSSymbols:
        """Latent z2 -> both scales' symbols and the split map at ``quality``.

        The split map is ``choose_split``'s, judged against ``image`` (the padded input z2 was
        analysed from), unless ``split`` ([H/2, W/2] in latent units, 1 = fine) imposes one
        (tests, or an external split predictor).
        """
        q = torch.tensor([quality], dtype=torch.float32, device=z2.device)
        y = z2 * self.gain(q)
        y_c = self.split_down(y)
        if split is not None:
            return self._symbols(y, y_c, split.to(y).view(1, 1, *y_c.shape[2:]))
        split = self.choose_split(y, y_c, quality, image)
        sym = self._symbols(y, y_c, split)
        if not split.all() and not self._decodable(sym, quality):
            sym = self._symbols(y, y_c, torch.ones_like(split))
        return sym

    def _decodable(self, sym: MSSymbols, quality: float) -> bool:
        """Whether the bit-exact synthesis decodes ``sym``. The coarse synthesis can put small values
        into channels whose gain is tiny at low qualities; divided by that gain they can leave the
        fixed point's exact range (shipped weights, q1, a checkerboard map imposed on the sample
        image). The encoder never writes a file that no decoder could decode: it codes all-fine."""
        try:
            self.synthesize_exact(self.dequantize(sym), quality)
        except ExactnessError:
            return False
        return True

    def _symbols(self, y: torch.Tensor, y_c: torch.Tensor, split: torch.Tensor) -> MSSymbols:
        """Both scales' symbols for a split map [1, 1, H/2, W/2]; the coarse hyperlatent sees the
        coarse regions only, and is not coded at all when there is none."""
        coarse, up = 1 - split, self._up(split)
        ebc, eb = self.entropy_bottleneck_c, self.entropy_bottleneck
        hc_sym = ebc.quantize(self.h_a_c(y_c * coarse), "symbols", ebc._get_medians())
        if split.all():
            hc_sym = torch.zeros_like(hc_sym)
        idx_c, mu_c = self.coarse_params(hc_sym)
        yc_round = torch.round(y_c)
        v_grid = self.context(yc_round * coarse)
        h_sym = eb.quantize(self.h_a(torch.cat([y * up, (v_grid * 2.0**-ACT_BITS).float()], 1)), "symbols",
                            eb._get_medians())
        y_round = torch.round(y)
        idx, mu = self.hyper_decode(h_sym, v_grid, y_round, up)
        y_sym = ((y_round - torch.round(mu)) * up).int()
        yc_sym = ((yc_round - torch.round(mu_c)) * coarse).int()
        return MSSymbols(Symbols(h_sym[0].int(), y_sym[0], idx[0], self.coding_offset(mu)[0], mu),
                         Symbols(hc_sym[0].int(), yc_sym[0], idx_c[0], self.coding_offset(mu_c)[0], mu_c),
                         split[0, 0].to(torch.uint8))

    @torch.inference_mode()
    def dequantize(self, sym: MSSymbols) -> torch.Tensor:
        """Symbols -> the dequantized fine latent y_hat [1, M, H, W], float64, exact (2^-14 grid)."""
        split = sym.split[None, None].double()
        up = self._up(split)
        mu_c = sym.coarse.mu if sym.coarse.mu is not None else self.coarse_params(sym.coarse.hyper)[1]
        yc_hat = (sym.coarse.latent[None].double() + torch.round(mu_c).double()) * (1 - split)
        mu = sym.fine.mu
        if mu is None:
            v_grid = self.context(yc_hat)
            mu_anchor = self.hyper_decode(sym.fine.hyper, v_grid)[1]
            y_round = sym.fine.latent[None].double() + torch.round(mu_anchor).double()  # exact at the anchors
            mu = self.hyper_decode(sym.fine.hyper, v_grid, y_round, up)[1]
        coarse = self._exact()["split_up"](to_grid(yc_hat, SYNTH_ACT_BITS)) * 2.0**-SYNTH_ACT_BITS
        fine = sym.fine.latent[None].double() + torch.round(mu).double()
        return torch.where(up > 0, fine, coarse)

    @torch.inference_mode()
    def decompress(self, symbols: MSSymbols, quality: float) -> torch.Tensor:
        """Symbols -> reconstruction [1, 3, H, W] in [0, 1], float64, in fixed point (see ANFIC)."""
        return self.synthesize_exact(self.dequantize(symbols), quality)

    @torch.inference_mode()
    def decompress_float(self, symbols: MSSymbols, quality: float) -> torch.Tensor:
        return self.synthesize_float(self.dequantize(symbols).float(), quality)

    def decoder_program(self) -> tuple[dict, dict]:
        """The checkerboard model's program with the fine hyper-synthesis in two parts (v joins the
        input of its last layer), the coarse hyper-synthesis and tables, and the coarse synthesis
        (``split_up``: its linear part and its branch, run at both grids as ``_exact`` does)."""
        from ..lowering import describe
        program, arrays = super().decoder_program()
        names = {m: n for n, m in self.named_modules()}
        cfg, ebc = self.config, self.entropy_bottleneck_c
        program.update({"hyper": describe(self.h_s.net[:4], names, arrays),
                        "hyper_head": describe(self.h_s.net[4], names, arrays),
                        "coarse_hyper": describe(self.h_s_c, names, arrays),
                        "split_up_linear": describe(self.split_up.linear, names, arrays),
                        "split_up_branch": describe(self.split_up.branch, names, arrays),
                        "coarse_M": cfg.coarse_M, "coarse_hyper_N": cfg.coarse_hyper_N, "region": REGION})
        tables = {"coarse_hyper_cdf": ebc._quantized_cdf, "coarse_hyper_offset": ebc._offset,
                  "coarse_hyper_cdf_length": ebc._cdf_length, "coarse_hyper_medians": ebc._get_medians()}
        arrays.update({f"tables.{k}": v.detach().cpu().numpy() for k, v in tables.items()})
        return program, arrays

    def train(self, mode: bool = True):
        self._exact_ms = self.__dict__["_last_fine"] = None
        return super().train(mode)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        names = ["_quantized_cdf", "_offset", "_cdf_length"]
        present = [b for b in names if f"entropy_bottleneck_c.{b}" in state_dict]
        if present:
            from ..entropy_models import update_registered_buffers
            update_registered_buffers(self.entropy_bottleneck_c, "entropy_bottleneck_c", present, state_dict,
                                      policy="resize")
        self._exact_ms = self.__dict__["_last_fine"] = None
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def update_tables(self) -> None:
        super().update_tables()
        self.entropy_bottleneck_c.update(force=True)
        self._exact_ms = self.__dict__["_last_fine"] = None
