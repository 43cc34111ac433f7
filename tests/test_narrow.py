"""Narrowing a trained model's flow branches to a smaller width (the start of a faster model)."""
import numpy as np
import torch

from anfcodec.entropy_models import GDN
from anfcodec.models import ANFICCheckerboard, build_model
from anfcodec.training.narrow import STACKS, _narrow_gdn, narrow_state_dict
from conftest import synthetic_image

SMALL = {"arch": "anfic-ckbd", "N": 16, "M": 64, "hyper_N": 16, "qe_width": 8, "context_N": 16, "fusion_N": 32}


def _trained_like(seed: int = 0) -> ANFICCheckerboard:
    """A small model whose zero-started last layers are not zero (as after training)."""
    torch.manual_seed(seed)
    model = build_model(SMALL)
    with torch.no_grad():
        for name in STACKS:
            last = model.get_submodule(name)[-1]
            last.weight.normal_(0, 0.05)
    return model.eval()


def _crops() -> torch.Tensor:
    imgs = [torch.from_numpy(np.array(synthetic_image(64, 64, seed=s))).permute(2, 0, 1) for s in range(4)]
    return torch.stack(imgs).float() / 255


def test_narrowing_to_the_same_width_keeps_the_model():
    model, x = _trained_like(), _crops()
    same = build_model(SMALL)
    same.load_state_dict(narrow_state_dict(model, {"N": 16, "qe_width": 8}, x))
    same.eval()
    with torch.no_grad():
        for a, b in zip(model.flow_forward(x - 0.5), same.flow_forward(x - 0.5)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_a_narrowed_model_loads_at_its_width_and_codes():
    model, x = _trained_like(), _crops()
    narrow = build_model({**SMALL, "N": 8, "qe_width": 4})
    narrow.load_state_dict(narrow_state_dict(model, {"N": 8, "qe_width": 4}, x))  # strict: every shape matches
    narrow.eval()
    symbols = narrow.compress(x[:1], quality=4)
    rec = narrow.decompress(symbols, quality=4)
    assert rec.shape == x[:1].shape
    # Everything outside the branches is copied as it was.
    for name, value in model.state_dict().items():
        if not name.startswith(tuple(STACKS)):
            assert torch.equal(narrow.state_dict()[name], value), name


def test_channels_that_feed_nothing_are_the_ones_dropped():
    model, x = _trained_like(), _crops()
    g_a2 = model.g_a2
    with torch.no_grad():
        g_a2[2].weight[:, :8] = 0  # hidden channels 0..7 of the first layer reach nothing downstream
    state = narrow_state_dict(model, {"N": 8}, x)
    assert torch.equal(state["g_a2.0.weight"], g_a2[0].weight[8:])
    assert torch.equal(state["g_a2.0.bias"], g_a2[0].bias[8:])


def test_gdn_keeps_its_normalisation_when_the_dropped_inputs_are_steady():
    torch.manual_seed(1)
    gdn = GDN(6)
    with torch.no_grad():
        gdn.gamma.copy_(gdn.gamma_reparam.init(torch.rand(6, 6) * 0.5))
        gdn.beta.copy_(gdn.beta_reparam.init(torch.rand(6) + 0.5))
    keep = torch.tensor([0, 2, 3])
    x = torch.randn(2, 6, 5, 5)
    x[:, [1, 4, 5]] = torch.tensor([0.7, -1.2, 2.0]).view(1, 3, 1, 1)  # dropped inputs: constant
    small = GDN(3)
    small.load_state_dict({**small.state_dict(), **_narrow_gdn(gdn, keep, x.pow(2).mean((0, 2, 3)))})
    torch.testing.assert_close(small(x[:, keep]), gdn(x)[:, keep], rtol=1e-5, atol=1e-6)


def test_training_with_a_width_narrows_the_initial_weights(tmp_path):
    from anfcodec.training.train import TrainOptions, train
    data = tmp_path / "photos"
    data.mkdir()
    for i in range(3):
        synthetic_image(96, 96, seed=i).save(data / f"p{i}.png")
    init = tmp_path / "wide.pt"
    torch.save(_trained_like().state_dict(), init)
    opts = TrainOptions(run_dir=tmp_path / "run", data=data, crop=64, batch=2, val_size=64, max_steps=1,
                        config=dict(SMALL), init=init, widths={"N": 8, "qe_width": 4}, threads=torch.get_num_threads(), bf16=False)
    train(opts)
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert state["config"]["N"] == 8 and state["config"]["qe_width"] == 4 and state["counters"]["step"] == 1
    assert state["model"]["g_s2.2.weight"].shape[:2] == (8, 8)


def test_dropped_channels_leave_their_mean_in_the_next_bias():
    """Channels that are constant on the calibration images are dropped without changing the output."""
    model, x = _trained_like(), _crops()
    post = model.post_filter.net
    with torch.no_grad():
        post[0].weight[:4] = 0   # first hidden layer, channels 0..3: a constant (their bias) everywhere
        post[0].bias[:4] = torch.tensor([0.3, 0.1, 0.7, 0.2])
        post[2].weight[:, :4] *= 0.01  # and weak downstream, so these are the ones dropped
        post[0].weight[4:] *= 10       # (the others carry real signal)
        post[2].weight[4:] = 0   # second hidden layer, channels 4..7: zero everywhere
        post[2].bias[4:] = 0
    narrow = build_model({**SMALL, "qe_width": 4})
    narrow.load_state_dict(narrow_state_dict(model, {"qe_width": 4}, x))
    inner = x - 0.5
    with torch.no_grad():
        wide_out, narrow_out = post(inner.clone()), narrow.post_filter.net(inner.clone())
    # Away from the zero-padded border, the constant channels' contribution moved into the bias exactly.
    torch.testing.assert_close(narrow_out[..., 2:-2, 2:-2], wide_out[..., 2:-2, 2:-2], rtol=1e-4, atol=1e-6)
