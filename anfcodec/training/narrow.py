"""Narrow a trained model's flow branches and post-filter to smaller hidden widths.

A lighter, faster model starts from trained weights instead of from scratch.
Most of the work of coding a 768x512 image is in the four GDN branches of the
flow (g_a1, g_s1, g_a2, g_s2), whose cost grows with N squared, and in the
full-resolution post-filter, whose cost grows with its width squared. The
block DCT, hyperprior, context model and gains are copied unchanged.

Each hidden layer keeps the channels that carry the most signal into the next
layer on calibration crops: RMS activation times the norm of the next layer's
weights for that channel. What the dropped channels contributed on average is
folded into what stays: their mean activation into the next layer's bias, and
for a GDN their mean square (gamma_ij * E[x_j^2]) into beta_i, so the kept
channels are normalised as before on average.
"""
from __future__ import annotations

import torch
from torch import nn

from ..entropy_models import GDN

# Stacks of (conv, activation, conv, activation, ..., conv) and the config field naming their hidden width.
STACKS = {"g_a1.branch": "N", "g_s1.branch": "N", "g_a2": "N", "g_s2": "N", "post_filter.net": "qe_width"}


def _per_input(layer: nn.Module) -> torch.Tensor:
    """The layer's weight as [C_in, C_out, k, k] (Conv2d stores [C_out, C_in, k, k])."""
    w = layer.weight.detach().double()
    return w if isinstance(layer, nn.ConvTranspose2d) else w.transpose(0, 1)


def _keep_channels(rms: torch.Tensor, next_layer: nn.Module, n: int) -> torch.Tensor:
    """Indices (sorted) of the n channels with the largest RMS x outgoing weight norm."""
    norm = _per_input(next_layer).flatten(1).norm(dim=1)
    return torch.sort(torch.topk(rms.double() * norm, n).indices).values


def _select(layer: nn.Module, out_keep: torch.Tensor | None, in_keep: torch.Tensor | None) -> dict:
    """Weight and bias of a (transposed) convolution restricted to kept output/input channels."""
    w, b = layer.weight.detach(), layer.bias.detach()
    out_dim, in_dim = (1, 0) if isinstance(layer, nn.ConvTranspose2d) else (0, 1)
    if out_keep is not None:
        w, b = w.index_select(out_dim, out_keep), b.index_select(0, out_keep)
    if in_keep is not None:
        w = w.index_select(in_dim, in_keep)
    return {"weight": w.clone(), "bias": b.clone()}


def _mean_contribution(next_layer: nn.Module, dropped: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """What channels ``dropped`` add on average to each output of ``next_layer`` (borders aside).

    A stride-s transposed convolution spreads each input over s^2 output phases: the average phase."""
    taps = _per_input(next_layer)[dropped].sum(dim=(2, 3))          # [dropped, C_out]
    phases = next_layer.stride[0] ** 2 if isinstance(next_layer, nn.ConvTranspose2d) else 1
    return (mean.double()[dropped] @ taps / phases).float()


def _narrow_gdn(gdn: GDN, keep: torch.Tensor, mean_sq_input: torch.Tensor) -> dict:
    """GDN restricted to ``keep``, with the dropped channels' mean pool contribution folded into beta."""
    beta = gdn.beta_reparam(gdn.beta.detach()).double()
    gamma = gdn.gamma_reparam(gdn.gamma.detach()).double()
    dropped = torch.ones(len(beta), dtype=torch.bool)
    dropped[keep] = False
    beta = beta + gamma[:, dropped] @ mean_sq_input.double()[dropped]
    beta, gamma = beta[keep].float(), gamma[keep][:, keep].float()
    return {"beta": gdn.beta_reparam.init(beta), "gamma": gdn.gamma_reparam.init(gamma)}


@torch.no_grad()
def activation_statistics(model, crops: torch.Tensor) -> dict:
    """Per activation layer of every stack: (mean, mean square) of its output and mean square of its input."""
    sums, hooks = {}, []
    for name in STACKS:
        for i, layer in enumerate(model.get_submodule(name)):
            if isinstance(layer, (GDN, nn.LeakyReLU)):
                def hook(module, inputs, output, key=(name, i)):
                    dims = (0, 2, 3)
                    new = (output.double().mean(dims), output.double().pow(2).mean(dims),
                           inputs[0].double().pow(2).mean(dims))
                    old = sums.get(key)
                    sums[key] = new if old is None else tuple(a + b for a, b in zip(old, new))
                hooks.append(layer.register_forward_hook(hook))
    saved, model.autocast_dtype = model.autocast_dtype, None
    try:
        batches = crops.split(2)
        for x in batches:
            _, z2 = model.flow_forward(x.float() - 0.5)
            model.post_filter.net(model.flow_inverse(z2))
    finally:
        model.autocast_dtype = saved
        for h in hooks:
            h.remove()
    # A LeakyReLU in place hands the hook its output as input too; only GDNs use the input statistic.
    return {k: tuple(v / len(batches) for v in vals) for k, vals in sums.items()}


def narrow_state_dict(model, widths: dict, crops: torch.Tensor) -> dict:
    """The state dict of ``model`` with its stacks narrowed to ``widths`` ({"N": 64, "qe_width": 16}).

    ``crops`` are calibration images [B, 3, H, W] in [0, 1] (H, W multiples of 64).
    """
    for field, n in widths.items():
        if n > getattr(model.config, field):
            raise ValueError(f"cannot narrow {field}={getattr(model.config, field)} to a wider {n}")
    stats = activation_statistics(model, crops)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for name, field in STACKS.items():
        if field not in widths:
            continue
        stack = model.get_submodule(name)
        keep, fold = None, None
        for i, layer in enumerate(stack):
            if not isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
                continue
            last = i == len(stack) - 1
            mean, mean_sq, in_mean_sq = (None, None, None) if last else stats[(name, i + 1)]
            out_keep = None if last else _keep_channels(mean_sq.sqrt(), stack[i + 2], widths[field])
            params = _select(layer, out_keep, keep)
            if fold is not None:
                params["bias"] += fold.index_select(0, out_keep) if out_keep is not None else fold
            for param, value in params.items():
                state[f"{name}.{i}.{param}"] = value
            if not last:
                dropped = torch.ones(len(mean), dtype=torch.bool)
                dropped[out_keep] = False
                fold = _mean_contribution(stack[i + 2], dropped, mean)
                if isinstance(stack[i + 1], GDN):
                    for param, value in _narrow_gdn(stack[i + 1], out_keep, in_mean_sq).items():
                        state[f"{name}.{i + 1}.{param}"] = value
            keep = out_keep
    return state
