"""The torch-free reader of the shipped weights files gives torch.load's tensors, and runs no code."""
import io
import pickle
import zipfile

import numpy as np
import pytest
import torch

from anfcodec import ptfile, zoo


@pytest.mark.parametrize("path", sorted(zoo.WEIGHTS_DIR.glob("*.pt")), ids=lambda p: p.name)
def test_every_shipped_weights_file_reads_as_torch_loads_it(path):
    ref = torch.load(path, map_location="cpu", weights_only=True)
    got = ptfile.load_state_dict(path)
    assert list(got) == list(ref)
    for k, v in ref.items():
        assert got[k].shape == tuple(v.shape) and got[k].dtype == v.numpy().dtype, k
        assert np.array_equal(got[k], v.numpy()), k


def test_views_with_offsets_and_strides_read_back(tmp_path):
    base = torch.arange(24, dtype=torch.float32)
    state = {"t": base.view(4, 6).t(), "slice": base[5:11], "half": torch.ones(3, dtype=torch.float16),
             "long": torch.tensor([1, -2], dtype=torch.int64), "empty": torch.zeros(0, 3)}
    torch.save(state, tmp_path / "w.pt")
    got = ptfile.load_state_dict(tmp_path / "w.pt")
    for k, v in state.items():
        assert np.array_equal(got[k], v.numpy()) and got[k].shape == tuple(v.shape), k


def test_a_file_that_would_run_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    torch.save({"w": torch.ones(1)}, tmp_path / "w.pt")
    src = zipfile.ZipFile(tmp_path / "w.pt")
    with zipfile.ZipFile(tmp_path / "evil.pt", "w") as out:
        for name in src.namelist():
            out.writestr(name, pickle.dumps({"w": Evil()}) if name.endswith("data.pkl") else src.read(name))
    with pytest.raises(ptfile.WeightsFormatError, match="builtins.print"):
        ptfile.load_state_dict(tmp_path / "evil.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    with pytest.raises(ptfile.WeightsFormatError, match="not a PyTorch zip"):
        ptfile.load_state_dict(tmp_path / "junk.pt")
