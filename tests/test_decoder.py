"""The torch-free decoder's networks against the torch decoder's: the same integers, the same pixels."""
import numpy as np
import pytest
import torch

from anfcodec import ptfile, zoo
from anfcodec.decoder import program as prog
from anfcodec.decoder.nets import ExactNet, to_grid
from anfcodec.decoder.synthesis import Synthesis

MODELS = ["anfic-ckbd-n64-m256-int8", "anfic-ckbd-n64-m256", "anfic-n128-m256"]


def _arrays(model_id):
    model = zoo.load_model(model_id)
    program, derived = model.decoder_program()
    entry = zoo.find_entry(model_id)
    state = ptfile.load_state_dict(zoo.WEIGHTS_DIR / entry["file"])
    return model, program, {**state, **derived}


@torch.inference_mode()
def _latent(model, quality, size=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, size, size, generator=g)
    x = torch.nn.functional.avg_pool2d(x, 9, 1, 4)  # smooth enough to look like an image to the flow
    return model.analyze(x) * model.gain(torch.tensor([quality]))


@pytest.mark.parametrize("model_id", MODELS)
def test_program_round_trips_through_its_file(model_id, tmp_path):
    _, program, arrays = _arrays(model_id)
    derived = {k: v for k, v in arrays.items() if "." in k and not k.endswith((".weight", ".bias"))}
    prog.save(tmp_path / "p.npz", program, derived)
    loaded, back = prog.load(tmp_path / "p.npz")
    assert loaded["synthesis_order"] == program["synthesis_order"]
    assert all(np.array_equal(back[k], derived[k]) for k in derived)


@pytest.mark.parametrize("model_id", MODELS)
@pytest.mark.parametrize("quality", [1.0, 4.5, 8.0])
def test_synthesis_gives_the_torch_decoders_pixels(model_id, quality):
    model, program, arrays = _arrays(model_id)
    y = torch.round(_latent(model, quality)).double()
    want = model.synthesize_exact(y, quality)
    got = Synthesis(program, arrays)(y.numpy(), quality)
    assert np.array_equal(got, want.numpy())


@pytest.mark.parametrize("model_id", MODELS)
def test_hyper_synthesis_gives_the_torch_integers(model_id):
    model, program, arrays = _arrays(model_id)
    g = torch.Generator().manual_seed(1)
    h_hat = torch.randint(-6, 7, (1, model.config.hyper_N, 3, 4), generator=g).float()
    with torch.inference_mode():
        want = model._exact_hyper(h_hat)
    got = ExactNet(prog.lower(program["hyper"], arrays))(to_grid(h_hat.numpy()))
    assert np.array_equal(got, want.numpy())
