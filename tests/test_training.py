"""Training loop pieces that decide what a run does: the learning-rate schedule."""
import pytest

from anfcodec.training.train import TrainOptions, scheduled_lr


def test_constant_without_final_lr():
    opts = TrainOptions(lr=3e-4)
    assert [scheduled_lr(opts, f) for f in (0, 0.5, 1)] == [3e-4] * 3


def test_cosine_anneals_from_peak_to_final_monotonically():
    opts = TrainOptions(lr=1e-4, lr_final=1e-5)
    lrs = [scheduled_lr(opts, i / 20) for i in range(21)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[-1] == pytest.approx(1e-5)
    assert lrs[10] == pytest.approx(5.5e-5)
    assert all(b < a for a, b in zip(lrs, lrs[1:]))
    assert scheduled_lr(opts, 1.7) == pytest.approx(1e-5)  # past the budget (final validation) stays at the end
