"""ANFIC with a checkerboard context model on the latent (He et al., CVPR 2021).

The latent's positions split like a checkerboard. Anchors ((row + column) even)
are coded first, with the hyperprior's parameters alone. Every other position
is then coded with parameters that also see its decoded anchor neighbours: a
5x5 convolution of the anchors, fused with the hyperprior's output by two 1x1
layers that add a correction to (mu, log sigma). Both passes are parallel (no
serial scan), and the context path runs in the same fixed point as the
hyperprior's, so the decoder rebuilds the encoder's tables exactly.

The context needs the fixed quantizer: the latent's grid does not depend on the
parameters, so round(y), the context's input, is known to the encoder before
any parameter is. Grown from ANFIC weights, the fusion's last layer starts at
zero, so the model starts out coding exactly like them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..exact import ExactSequential, to_grid
from .anfic import ANFIC, ANFICConfig, Symbols


@dataclass
class CheckerboardConfig(ANFICConfig):
    context_N: int = 192   # channels of the anchor-context convolution
    fusion_N: int = 384    # hidden width of the 1x1 fusion with the hyperprior's output

    arch_name = "anfic-ckbd"
    missing_quantizer = "fixed"


def anchor_mask(height: int, width: int, device=None) -> torch.Tensor:
    """Boolean [height, width]: True at the anchors, (row + column) even."""
    i = torch.arange(height, device=device)[:, None]
    j = torch.arange(width, device=device)[None, :]
    return (i + j) % 2 == 0


class ANFICCheckerboard(ANFIC):
    arch = CheckerboardConfig.arch_name
    fresh_modules = ("context_prediction", "entropy_fusion")  # trained at the gains' larger learning rate

    def __init__(self, config: CheckerboardConfig | None = None):
        cfg = config or CheckerboardConfig()
        if cfg.quantizer != "fixed":
            raise ValueError("the checkerboard context needs the fixed quantizer (its input is round(y))")
        super().__init__(cfg)
        m = cfg.M
        self.context_prediction = nn.Conv2d(m, cfg.context_N, 5, padding=2)
        self.entropy_fusion = nn.Sequential(nn.Conv2d(2 * m + cfg.context_N, cfg.fusion_N, 1),
                                            nn.LeakyReLU(inplace=True),
                                            nn.Conv2d(cfg.fusion_N, 2 * m, 1))
        nn.init.zeros_(self.entropy_fusion[-1].weight)
        nn.init.zeros_(self.entropy_fusion[-1].bias)
        self._exact_context = None

    @classmethod
    def from_config(cls, config: dict) -> "ANFICCheckerboard":
        return cls(CheckerboardConfig.from_dict(config))

    def init_from(self, state: dict) -> None:
        """Load checkerboard weights, or grow ANFIC weights (the context modules keep their zero-output start)."""
        own = self.state_dict()
        self.load_state_dict({**{k: v for k, v in own.items() if k.startswith(self.fresh_modules)}, **state})

    # -- the context ------------------------------------------------------------------
    def entropy_parameters(self, h_hat: torch.Tensor, y: torch.Tensor | None = None):
        if not self.training or y is None:
            return super().entropy_parameters(h_hat, y)
        base = self._run(self.h_s, h_hat)
        y_hat = y + (torch.round(y) - y).detach()  # what the decoder has: the rounded anchors
        anchor = anchor_mask(*y.shape[-2:], device=y.device).to(y.dtype)
        ctx = self._run(self.context_prediction, y_hat * anchor)
        out = base + self._run(self.entropy_fusion, torch.cat([base, ctx], 1)) * (1 - anchor)
        return self._float_parameters(out)

    def exact_entropy_parameters(self, h_hat: torch.Tensor, y_round: torch.Tensor | None = None):
        """Without ``y_round``, the anchors' parameters (exact everywhere, used at anchors only);
        with it (only its anchors are read), every position's."""
        out = self._exact_hyper(h_hat)
        if y_round is not None:
            out = out.clone()
            anchor = anchor_mask(*y_round.shape[-2:], device=y_round.device).double()
            for rows, cols, correction in self._exact_corrections(to_grid(y_round.double() * anchor), out):
                out[:, :, rows, cols] += correction
        return self._split_exact(out)

    def _exact_corrections(self, anchors: torch.Tensor, base: torch.Tensor):
        """The fusion's corrections at the non-anchors, the only positions that use them: (rows, columns,
        correction) for the two lattices (even rows, odd columns) and (odd rows, even columns).

        The 5x5 context at a lattice is a stride-2 convolution of the zero-padded anchors shifted by
        the lattice's offset, and the 1x1 fusion runs on the lattices' positions alone: the same
        integer products at those positions as the whole-image form, for half its work (the fast
        model's 768x512 context and fusion: 0.08 s before)."""
        if self._exact_context is None:
            k = self.context_prediction.kernel_size[0]
            lattice = nn.Conv2d(self.context_prediction.in_channels, self.context_prediction.out_channels, k, stride=2)
            lattice.load_state_dict(self.context_prediction.state_dict())
            self._exact_context = (ExactSequential(lattice.to(anchors.device)), ExactSequential(self.entropy_fusion),
                                   self.context_prediction.padding[0])
        context, fusion, pad = self._exact_context
        padded = F.pad(anchors, (pad, pad, pad, pad))
        lattices = [(slice(0, None, 2), slice(1, None, 2)), (slice(1, None, 2), slice(0, None, 2))]
        ctx = [context(padded[:, :, rows.start:, cols.start:]) for rows, cols in lattices]
        flat = [torch.cat([base[:, :, rows, cols], c], 1).flatten(2) for (rows, cols), c in zip(lattices, ctx)]
        corr = fusion(torch.cat(flat, 2)[:, :, None])[:, :, 0]  # [B, 2M, positions of both lattices]
        n0 = flat[0].shape[-1]
        return [(rows, cols, part.reshape(*part.shape[:2], *c.shape[2:]))
                for (rows, cols), c, part in zip(lattices, ctx, (corr[..., :n0], corr[..., n0:]))]

    def decoder_program(self) -> tuple[dict, dict]:
        from ..lowering import describe
        program, arrays = super().decoder_program()
        names = {m: n for n, m in self.named_modules()}
        program["context"] = describe(self.context_prediction, names, arrays)
        program["fusion"] = describe(self.entropy_fusion, names, arrays)
        return program, arrays

    def latent_passes(self, shape: tuple[int, int]) -> list[np.ndarray]:
        """The anchors, then the other positions (whose parameters see the decoded anchors)."""
        anchor = anchor_mask(*shape).numpy()
        return [anchor, ~anchor]

    def derive_means(self, symbols: Symbols) -> torch.Tensor:
        h = symbols.hyper[None] if symbols.hyper.dim() == 3 else symbols.hyper
        _, mu_anchor = self.hyper_decode(h)
        y_round = symbols.latent[None].double() + torch.round(mu_anchor).double()  # exact at the anchors
        return self.hyper_decode(h, y_round)[1]

    def train(self, mode: bool = True):
        self._exact_context = None
        return super().train(mode)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        self._exact_context = None
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def update_tables(self) -> None:
        super().update_tables()
        self._exact_context = None
