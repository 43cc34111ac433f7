"""ANFIC model: invertibility of the flow, the training surface, quality conditioning."""
import numpy as np
import torch

from anfcodec.models import ANFIC, ANFICConfig, build_model


def tiny() -> ANFIC:
    torch.manual_seed(0)
    m = ANFIC(ANFICConfig(N=16, M=64, hyper_N=16, qe_width=8))
    # Make every branch non-trivial so invertibility is tested on a real nonlinear flow.
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() == 4 and p.abs().sum() == 0:
                p.normal_(0, 0.05)
    return m.eval()


def check_inverse(model, x):
    with torch.no_grad():
        x1, z2 = model.flow_forward(x - 0.5)
        x2 = x1 - model._run(model.g_s2, z2)
        rec = model.flow_inverse(z2, x2) + 0.5
    return (rec - x).abs().max().item()


def test_flow_is_invertible_on_random_input():
    assert check_inverse(tiny(), torch.rand(2, 3, 64, 64)) < 1e-3


def test_flow_is_invertible_on_real_image(sample_image, model):
    x = torch.from_numpy(np.asarray(sample_image).copy()).permute(2, 0, 1)[None].float() / 255
    assert check_inverse(tiny(), x) < 1e-3
    assert check_inverse(model, x) < 1e-3  # the shipped weights too


def test_forward_returns_training_surface():
    m = tiny().train()
    x = torch.rand(2, 3, 64, 64)
    out = m(x, torch.tensor([1.0, 7.5]))
    assert out["x_hat"].shape == x.shape and out["x2"].shape == x.shape
    assert set(out["likelihoods"]) == {"y", "h"}
    loss = sum((-torch.log2(l)).sum() for l in out["likelihoods"].values()) + out["x_hat"].sum()
    loss.backward()
    assert m.log_gain.grad is not None


def test_quality_interpolation_is_monotone():
    m = tiny()
    q = torch.linspace(1, 8, 29)
    lam = m.lmbda(q)
    assert torch.all(lam[1:] > lam[:-1])
    lo, hi = m.config.lambdas[0], m.config.lambdas[-1]
    assert torch.allclose(m.lmbda(torch.tensor([1.0, 8.0])), torch.tensor([lo, hi]))


def test_retargeting_keeps_operating_points():
    m = tiny()
    old_lambdas = m.config.lambdas
    with torch.no_grad():
        m.log_gain.normal_()
    gain_at = {lam: m.gain(torch.tensor([q + 1.0])).flatten() for q, lam in enumerate(old_lambdas)}
    # Shift every quality one step down and add one below: the old points reappear one quality up.
    new = (old_lambdas[0] ** 2 / old_lambdas[1],) + tuple(old_lambdas[:-1])
    m.retarget_qualities(new)
    assert torch.allclose(m.lmbda(torch.tensor([1.0, 8.0])), torch.tensor([new[0], new[-1]]))
    for q, lam in enumerate(new[1:], start=2):
        assert torch.allclose(m.gain(torch.tensor([float(q)])).flatten(), gain_at[lam], rtol=1e-4, atol=1e-4)
    assert m.config.lambdas == new and isinstance(m.log_gain, torch.nn.Parameter)


def test_config_round_trip():
    cfg = ANFICConfig(N=16, M=64, hyper_N=16, qe_width=8).to_dict()
    assert build_model(cfg).config == ANFICConfig.from_dict(cfg)


def test_encoder_precision_follows_the_hardware_and_yields_to_the_fp32_switch(monkeypatch):
    from anfcodec.models import anfic
    native = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert anfic.encoder_autocast_dtype("cpu") == (torch.bfloat16 if native else None)
    monkeypatch.setenv("ANFCODEC_ENCODER_FP32", "1")
    assert anfic.encoder_autocast_dtype("cpu") is None


def test_bf16_encoding_stays_in_the_encoder(small_image):
    # The autocast is scoped to analyze/refine: the float decoder after an encode runs in float32.
    from anfcodec import api, zoo
    from anfcodec.models import anfic
    model = zoo.load_model(zoo.default_model_id())
    saved, model.encode_dtype = model.encode_dtype, torch.bfloat16
    try:
        data = api.encode(small_image, quality=4)
        assert anfic._ENCODER_AMP.get() is None
        seen = []
        hook = model.g_s2.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
        try:
            api.decode(data, fast=True)
        finally:
            hook.remove()
        assert seen == [torch.float32]
    finally:
        model.encode_dtype = saved
