"""MS-ANFIC: ANFIC with a two-scale latent, a latent split unit and per-scale conditional hyperpriors.

The flow (``z2``, the gained latent ``y = z2 * gain`` at 1/16) is ANFIC's. On top of it::

    y_c   = split_down(y)                 coarse latent, 1/32: each 2x2 block of y -> one position
    split = 1 per 32x32-pixel region coded at the fine scale, 0 at the coarse scale
    coarse regions: y_hat = split_up(round(y_c))     under the coarse hyperprior (h_a_c, h_s_c)
    fine regions:   y_hat = round(y)                  under the fine hyperprior, conditioned on
    v = split_up(round(y_c) * (1 - split))            the coarse scale's representation: v joins
                                                      the input of h_a and of h_s's last layer

Each region is coded at exactly one scale; the other scale's positions there are
masked out and cost nothing. ``split_down``/``split_up`` (the latent split unit)
start as an orthonormal 2x2 average of the lowest-frequency channels and its
transpose, so the coarse scale is a learned projection of the fine latent; the
masking is the coarse scale's quantization, and everything else stays invertible.

The split map is decided by the encoder with a rate-distortion search per region
(rate of each scale's symbols + lambda * latent-domain distortion, which the
near-orthonormal block transform makes a proxy for pixel distortion), the way
HEVC picks coding-unit sizes. It is side information (one bit per region), so the
decoder needs no split network. Training makes the same decision per batch and
also trains the coarse scale everywhere (a small auxiliary term), so that it
becomes competitive where it is not yet chosen.

Built from single-scale ANFIC weights (``from_single_scale``), the extra
conditioning weights start at zero: with every region fine it codes exactly as
ANFIC does.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..entropy_models import EntropyBottleneck
from ..exact import ACT_BITS, SYNTH_ACT_BITS, SYNTH_WEIGHT_BITS, ExactSequential, to_grid
from ..layers import conv, deconv, dct_atoms
from .anfic import ANFIC, LOG_SCALE_MAX, LOG_SCALE_MIN, ANFICConfig, Symbols

REGION = 32  # pixels per split-map cell side: one coarse latent position


@dataclass
class MSANFICConfig(ANFICConfig):
    coarse_M: int = 128       # coarse latent channels
    coarse_hyper_N: int = 64  # coarse hyperlatent channels
    aux_weight: float = 0.2   # training: weight of coding the coarse scale everywhere

    arch_name = "ms-anfic"
    missing_quantizer = "fixed"  # every MS-ANFIC codes on the fixed grid


@dataclass
class MSSymbols:
    """Everything the entropy coder writes for one image: both scales and the split map."""
    fine: Symbols      # latent symbols of coarse regions are zero and not coded
    coarse: Symbols    # latent symbols of fine regions are zero and not coded
    split: torch.Tensor  # uint8 [H/2, W/2] (latent units): 1 = the region is coded at the fine scale


class MSANFIC(ANFIC):
    arch = MSANFICConfig.arch_name
    # Modules that ANFIC weights do not have: training gives them the larger learning rate.
    fresh_modules = ("split_down.", "split_up.", "h_a_c.", "h_s_c.", "entropy_bottleneck_c.")

    def __init__(self, config: MSANFICConfig | None = None):
        cfg = config or MSANFICConfig()
        if cfg.quantizer != "fixed":
            raise ValueError("MS-ANFIC codes latents on the fixed integer grid only")
        super().__init__(cfg)
        m, mc, nh = cfg.M, cfg.coarse_M, cfg.hyper_N
        # Conditional fine hyperprior: v (M channels) joins h_a's input and h_s's last layer.
        self.h_a.net[0] = conv(2 * m, nh, 3, 1)
        self.h_s.net[4] = conv(nh * 3 // 2 + m, 2 * m, 3, 1)
        self.split_down = nn.Conv2d(m, mc, 2, stride=2, bias=False)
        self.split_up = nn.ConvTranspose2d(mc, m, 2, stride=2, bias=False)
        with torch.no_grad():
            self.split_down.weight.copy_(self._initial_split(m, mc, cfg.block))
            self.split_up.weight.copy_(self.split_down.weight)
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
        fine channels (luma first, then all chroma), so split_up(split_down(y)) is a projection."""
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
        """An MS-ANFIC whose fine scale is the given ANFIC weights; new conditioning starts at zero."""
        model = cls(MSANFICConfig.from_dict({**config, "arch": cls.arch}))
        model.init_from(state)
        return model

    def init_from(self, state: dict) -> None:
        """Load MS-ANFIC weights, or grow single-scale ANFIC weights (no ``split_down``) into this model."""
        if "split_down.weight" in state:
            self.load_state_dict(state)
            return
        own = self.state_dict()
        merged = dict(own)
        for k, v in state.items():
            if k in own and own[k].shape == v.shape:
                merged[k] = v
            elif k in ("h_a.net.0.weight", "h_s.net.4.weight"):  # widened inputs: old part, zeros for v
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

    @staticmethod
    def _sigma(log_sigma: torch.Tensor) -> torch.Tensor:
        return torch.exp(log_sigma.clamp(LOG_SCALE_MIN, LOG_SCALE_MAX))

    def _exact(self) -> dict:
        if self._exact_ms is None:
            self._exact_ms = {"h_s_body": ExactSequential(self.h_s.net[:4]), "h_s_head": ExactSequential(self.h_s.net[4]),
                              "h_s_c": ExactSequential(self.h_s_c), "context": ExactSequential(self.split_up),
                              "split_up": ExactSequential(self.split_up, SYNTH_ACT_BITS, SYNTH_WEIGHT_BITS)}
        return self._exact_ms

    def _exact_params(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact network output -> (mu fp32, scale-table indices)."""
        mu, log_sigma = out.chunk(2, dim=1)
        log_sigma = log_sigma.clamp(LOG_SCALE_MIN * 2**ACT_BITS, LOG_SCALE_MAX * 2**ACT_BITS)
        return (mu * 2.0**-ACT_BITS).float(), self.scale_index(log_sigma)

    @torch.inference_mode()
    def coarse_params(self, hc_sym: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Coarse hyperlatent symbols -> (scale indices, means) of the coarse latent, bit-exact."""
        hc_sym = hc_sym if hc_sym.dim() == 4 else hc_sym[None]
        eb = self.entropy_bottleneck_c
        mu, idx = self._exact_params(self._exact()["h_s_c"](to_grid(eb.dequantize(hc_sym, eb._get_medians()))))
        return idx, mu

    @torch.inference_mode()
    def context(self, yc_hat: torch.Tensor) -> torch.Tensor:
        """Masked dequantized coarse latent (integers) -> v on the 2^-ACT_BITS grid, as integers."""
        return self._exact()["context"](to_grid(yc_hat if yc_hat.dim() == 4 else yc_hat[None]))

    @torch.inference_mode()
    def hyper_decode(self, h_sym: torch.Tensor, v_grid: torch.Tensor | None = None):
        """Fine hyperlatent symbols and the coarse context -> (scale indices, means), bit-exact."""
        h_sym = h_sym if h_sym.dim() == 4 else h_sym[None]
        eb = self.entropy_bottleneck
        body = self._exact()["h_s_body"](to_grid(eb.dequantize(h_sym, eb._get_medians())))
        if v_grid is None:
            v_grid = body.new_zeros(body.shape[0], self.config.M, *body.shape[2:])
        mu, idx = self._exact_params(self._exact()["h_s_head"](torch.cat([body, v_grid], 1)))
        return idx, mu

    # -- the split decision --------------------------------------------------------------
    def _bits(self, values: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        gc = self.gaussian_conditional
        return -torch.log2(gc.likelihood_lower_bound(gc._likelihood(values, sigma, means=mu)))

    def split_decision(self, y: torch.Tensor, gain: torch.Tensor, lmbda: torch.Tensor, fine_bits: torch.Tensor,
                       coarse_bits: torch.Tensor, coarse_rec: torch.Tensor) -> torch.Tensor:
        """1 per region where fine coding costs no more than coarse (bits + lambda * distortion), else 0.

        Distortion is the squared error of the flow latent z2 = y / gain, which the near-orthonormal
        block transform makes about the pixel squared error (x in [0, 1]); hence lambda * 255^2 / 3.
        """
        w = (lmbda * 255.0**2 / 3).view(-1, 1, 1, 1)
        fine_err = ((torch.round(y) - y) / gain) ** 2
        coarse_err = ((coarse_rec - y) / gain) ** 2
        cost_f = 4 * F.avg_pool2d((fine_bits + w * fine_err).sum(1, keepdim=True), 2)
        cost_c = coarse_bits.sum(1, keepdim=True) + w * 4 * F.avg_pool2d(coarse_err.sum(1, keepdim=True), 2)
        return (cost_f <= cost_c).float()

    @staticmethod
    def _up(split: torch.Tensor) -> torch.Tensor:
        return F.interpolate(split, scale_factor=2, mode="nearest")

    # -- training ---------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, quality: torch.Tensor) -> dict:
        """Training pass (and in eval mode, the rate and reconstruction of exactly what is coded)."""
        if not self.training:
            return self._forward_eval(x, quality)
        gain, lmbda = self.gain(quality), self.lmbda(quality)
        x1, z2 = self.flow_forward(x - 0.5)
        y = z2 * gain
        y_c = self.split_down(y)
        hc_hat, hc_lik = self.entropy_bottleneck_c(self._run(self.h_a_c, y_c))
        mu_c, log_sigma_c = self._run(self.h_s_c, hc_hat).chunk(2, 1)
        sigma_c = self._sigma(log_sigma_c)
        yc_round = torch.round(y_c)
        yc_hat = y_c + (yc_round - y_c).detach()
        with torch.no_grad():  # the encoder's decision, with the fine hyperprior as if no region were coarse
            medians = self.entropy_bottleneck._get_medians()
            zeros = torch.zeros_like(y)
            h0 = self.entropy_bottleneck.quantize(self._run(self.h_a, torch.cat([y, zeros], 1)), "dequantize", medians)
            mu0, log_sigma0 = self._fine_hyper_synthesis(h0, zeros).chunk(2, 1)
            split = self.split_decision(y, gain, lmbda, self._bits(torch.round(y), mu0, self._sigma(log_sigma0)),
                                        self._bits(yc_round, mu_c, sigma_c), self.split_up(yc_round))
        up = self._up(split)
        v = self.split_up(yc_hat * (1 - split))
        h_hat, h_lik = self.entropy_bottleneck(self._run(self.h_a, torch.cat([y * up, v], 1)))
        mu, log_sigma = self._fine_hyper_synthesis(h_hat, v).chunk(2, 1)
        _, y_lik = self.gaussian_conditional(y, self._sigma(log_sigma), means=mu)
        _, yc_lik = self.gaussian_conditional(y_c, sigma_c, means=mu_c)
        y_hat = up * (y + (torch.round(y) - y).detach()) + (1 - up) * v
        x_hat, x2 = self._reconstruct(x1, y_hat, gain, quality)
        # The coarse scale coded everywhere, hyperlatent included, on a detached copy of y: it
        # keeps learning where the split does not pick it yet, without pulling on the flow.
        yd = y.detach()
        ycd = self.split_down(yd)
        hcd_hat, hcd_lik = self.entropy_bottleneck_c(self._run(self.h_a_c, ycd))
        mu_cd, log_sigma_cd = self._run(self.h_s_c, hcd_hat).chunk(2, 1)
        rec_d = self.split_up(ycd + (torch.round(ycd) - ycd).detach())
        aux_bits = (self._bits(ycd, mu_cd, self._sigma(log_sigma_cd)).flatten(1).sum(1)
                    - torch.log2(hcd_lik).flatten(1).sum(1))
        # The gains are detached too: with a detached numerator, (.../gain)^2 would send every gain
        # only a push towards finer steps, strongest where the coarse projection drops detail.
        aux_err = (((rec_d - yd) / gain.detach()) ** 2).flatten(1).sum(1)
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
        sym = self.quantize(z2, quality)
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
            return eb(eb.dequantize(h_sym[None], eb._get_medians()))[1]
        h_coarse = hyper(self.entropy_bottleneck_c, sym.coarse.hyper)
        if sym.split.all():
            h_coarse = torch.ones_like(h_coarse)
        return {"y": latent(sym.fine, up), "h": hyper(self.entropy_bottleneck, sym.fine.hyper),
                "y_coarse": latent(sym.coarse, 1 - split), "h_coarse": h_coarse}

    def aux_loss(self) -> torch.Tensor:
        return self.entropy_bottleneck.loss() + self.entropy_bottleneck_c.loss()

    # -- codec surface ------------------------------------------------------------------------
    @torch.inference_mode()
    def quantize(self, z2: torch.Tensor, quality: float, split: torch.Tensor | None = None) -> MSSymbols:
        """Latent z2 -> both scales' symbols and the split map at ``quality``.

        The split map is the RD search's unless ``split`` ([H/2, W/2] in latent units, 1 = fine)
        imposes one (tests, or an external split predictor).
        """
        q = torch.tensor([quality], dtype=torch.float32, device=z2.device)
        gain, lmbda = self.gain(q), self.lmbda(q)
        y = z2 * gain
        y_c = self.split_down(y)
        ebc = self.entropy_bottleneck_c
        hc_sym = ebc.quantize(self.h_a_c(y_c), "symbols", ebc._get_medians())
        idx_c, mu_c = self.coarse_params(hc_sym)
        tables = self.scale_values().float()
        yc_round = torch.round(y_c)
        eb = self.entropy_bottleneck
        if split is None:
            zeros = torch.zeros_like(y)
            idx0, mu0 = self.hyper_decode(eb.quantize(self.h_a(torch.cat([y, zeros], 1)), "symbols",
                                                      eb._get_medians()))
            split = self.split_decision(y, gain, lmbda, self._bits(torch.round(y), mu0, tables[idx0.long()]),
                                        self._bits(yc_round, mu_c, tables[idx_c.long()]), self.split_up(yc_round))
        else:
            split = split.to(y).view(1, 1, *y_c.shape[2:])
        up = self._up(split)
        yc_hat = yc_round * (1 - split)
        v_grid = self.context(yc_hat)
        h_sym = eb.quantize(self.h_a(torch.cat([y * up, (v_grid * 2.0**-ACT_BITS).float()], 1)), "symbols",
                            eb._get_medians())
        idx, mu = self.hyper_decode(h_sym, v_grid)
        y_sym = ((torch.round(y) - torch.round(mu)) * up).int()
        yc_sym = ((yc_round - torch.round(mu_c)) * (1 - split)).int()
        if split.all():  # no coarse region: the coarse scale is not coded at all, not even its hyperlatent
            hc_sym = torch.zeros_like(hc_sym)
            idx_c, mu_c = self.coarse_params(hc_sym)
        return MSSymbols(Symbols(h_sym[0].int(), y_sym[0], idx[0], self.coding_offset(mu)[0]),
                         Symbols(hc_sym[0].int(), yc_sym[0], idx_c[0], self.coding_offset(mu_c)[0]),
                         split[0, 0].to(torch.uint8))

    @torch.inference_mode()
    def dequantize(self, sym: MSSymbols) -> torch.Tensor:
        """Symbols -> the dequantized fine latent y_hat [1, M, H, W], float64, exact (2^-14 grid)."""
        split = sym.split[None, None].double()
        up = self._up(split)
        _, mu_c = self.coarse_params(sym.coarse.hyper)
        yc_hat = (sym.coarse.latent[None].double() + torch.round(mu_c).double()) * (1 - split)
        _, mu = self.hyper_decode(sym.fine.hyper, self.context(yc_hat))
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

    def train(self, mode: bool = True):
        self._exact_ms = None
        return super().train(mode)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        names = ["_quantized_cdf", "_offset", "_cdf_length"]
        present = [b for b in names if f"entropy_bottleneck_c.{b}" in state_dict]
        if present:
            from ..entropy_models import update_registered_buffers
            update_registered_buffers(self.entropy_bottleneck_c, "entropy_bottleneck_c", present, state_dict,
                                      policy="resize")
        self._exact_ms = None
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def update_tables(self) -> None:
        super().update_tables()
        self.entropy_bottleneck_c.update(force=True)
        self._exact_ms = None
