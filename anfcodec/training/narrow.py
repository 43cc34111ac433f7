"""Narrow a trained model's flow branches to a smaller hidden width N.

A lighter, faster model starts from trained weights instead of from scratch.
Most of the coding work of a 768x512 image is in the four GDN branches of
the flow (g_a1, g_s1, g_a2, g_s2), and their cost grows with N squared; the
block DCT, hyperprior, context model, gains and post-filter do not depend on
N and are copied unchanged.

Each hidden layer keeps the n channels that carry the most signal into the
next layer on calibration crops: RMS activation times the norm of the next
layer's weights for that channel. A GDN pools the squares of all its input
channels; the dropped ones' mean contribution (gamma_ij * E[x_j^2]) is folded
into beta_i, so the kept channels are normalised as before on average.
"""
from __future__ import annotations

import torch
from torch import nn

from ..entropy_models import GDN

# The GDN branches whose hidden width is N: (conv, GDN, conv, GDN, conv, GDN, conv).
BRANCHES = ("g_a1.branch", "g_s1.branch", "g_a2", "g_s2")


def _keep_channels(rms: torch.Tensor, next_layer: nn.Module, n: int) -> torch.Tensor:
    """Indices (sorted) of the n channels with the largest RMS x outgoing weight norm."""
    w = next_layer.weight.detach().double()
    # Conv2d weight is [out, in, k, k]; ConvTranspose2d's is [in, out, k, k].
    per_input = w if isinstance(next_layer, nn.ConvTranspose2d) else w.transpose(0, 1)
    norm = per_input.flatten(1).norm(dim=1)
    return torch.sort(torch.topk(rms.double() * norm, n).indices).values


def _select(layer: nn.Module, out_keep: torch.Tensor | None, in_keep: torch.Tensor | None) -> dict:
    """Weight and bias of a (transposed) convolution restricted to kept output/input channels."""
    w, b = layer.weight.detach(), layer.bias.detach() if layer.bias is not None else None
    out_dim, in_dim = (1, 0) if isinstance(layer, nn.ConvTranspose2d) else (0, 1)
    if out_keep is not None:
        w = w.index_select(out_dim, out_keep)
        b = b.index_select(0, out_keep) if b is not None else None
    if in_keep is not None:
        w = w.index_select(in_dim, in_keep)
    return {"weight": w.clone(), **({"bias": b.clone()} if b is not None else {})}


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
def branch_statistics(model, crops: torch.Tensor) -> dict:
    """Per GDN of every branch: (RMS of its output, mean square of its input) over the crops."""
    stats, hooks = {}, []
    for name in BRANCHES:
        branch = model.get_submodule(name)
        for i, layer in enumerate(branch):
            if isinstance(layer, GDN):
                def hook(module, inputs, output, key=(name, i)):
                    dims = (0, 2, 3)
                    rms, msq = stats.get(key, (0.0, 0.0))
                    stats[key] = (rms + output.double().pow(2).mean(dims), msq + inputs[0].double().pow(2).mean(dims))
                hooks.append(layer.register_forward_hook(hook))
    saved, model.autocast_dtype = model.autocast_dtype, None
    try:
        for x in crops.split(2):
            _, z2 = model.flow_forward(x.float() - 0.5)
            model.g_s2(z2)
    finally:
        model.autocast_dtype = saved
        for h in hooks:
            h.remove()
    batches = (len(crops) + 1) // 2
    return {k: ((rms / batches).sqrt(), msq / batches) for k, (rms, msq) in stats.items()}


def narrow_state_dict(model, n: int, crops: torch.Tensor) -> dict:
    """The state dict of ``model`` with every flow branch narrowed to hidden width ``n``.

    ``crops`` are calibration images [B, 3, H, W] in [0, 1] (H, W multiples of 64).
    """
    if n > model.config.N:
        raise ValueError(f"cannot narrow width {model.config.N} to a wider {n}")
    stats = branch_statistics(model, crops)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for name in BRANCHES:
        branch = model.get_submodule(name)
        keep = None
        for i, layer in enumerate(branch):
            if isinstance(layer, GDN):
                continue
            last = i == len(branch) - 1
            out_keep = None if last else _keep_channels(stats[(name, i + 1)][0], branch[i + 2], n)
            for param, value in _select(layer, out_keep, keep).items():
                state[f"{name}.{i}.{param}"] = value
            if not last:
                for param, value in _narrow_gdn(branch[i + 1], out_keep, stats[(name, i + 1)][1]).items():
                    state[f"{name}.{i + 1}.{param}"] = value
            keep = out_keep
    return state
