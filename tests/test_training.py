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


@pytest.mark.parametrize("arch", ["anfic", "anfic-ckbd", "ms-anfic"])
def test_a_run_trains_stops_at_max_steps_and_resumes(tmp_path, arch):
    import torch
    from conftest import synthetic_image
    from anfcodec.models import ARCHITECTURES
    from anfcodec.training.train import train
    data = tmp_path / "photos"
    data.mkdir()
    for i in range(3):
        synthetic_image(96, 96, seed=i).save(data / f"p{i}.png")
    cls = ARCHITECTURES[arch]
    config = cls.from_config({"arch": arch, "N": 16, "M": 64, "hyper_N": 16, "qe_width": 8,
                              **({"coarse_M": 32, "coarse_hyper_N": 16, "split_N": 16} if arch == "ms-anfic" else {})}).config
    opts = TrainOptions(run_dir=tmp_path / "run", data=data, crop=64, batch=2, val_size=64, max_steps=3,
                        config=config.to_dict(), threads=torch.get_num_threads(), bf16=False, lr_final=1e-5)
    train(opts)
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert state["counters"]["step"] == 3 and state["config"]["arch"] == arch
    assert state["counters"]["step_schedule"] == {"key": [3, opts.lr, 1e-5], "from": 0}
    # A checkpoint carried without its Adam moments (a transfer from an accelerator) resumes too.
    state["opt"]["state"] = {}
    torch.save(state, tmp_path / "run" / "last.pt")
    opts.max_steps = 5
    train(opts)
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert state["counters"]["step"] == 5
    assert state["counters"]["step_schedule"]["from"] == 3  # a new end: a new schedule from here
    opts.max_steps, opts.minutes = 7, 0.0  # an invocation cut short before its first step ...
    train(opts)
    opts.minutes = 60
    train(opts)  # ... and its resumption continue one schedule toward step 7
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert state["counters"]["step"] == 7 and state["counters"]["step_schedule"]["from"] == 5
    log = (tmp_path / "run" / "log.jsonl").read_text().splitlines()
    assert sum('"val_loss"' in line for line in log) == 4  # a validation at the end of each invocation


def test_ms_anfic_grows_from_checkerboard_weights(tmp_path):
    import torch
    from anfcodec.models import ANFIC, ANFICConfig, ANFICCheckerboard, CheckerboardConfig, MSANFIC
    small = {"N": 16, "M": 64, "hyper_N": 16, "qe_width": 8, "context_N": 16, "fusion_N": 32}
    single = ANFICCheckerboard(CheckerboardConfig(**small))
    ms = MSANFIC.from_config({"arch": "ms-anfic", **small})
    with pytest.raises(ValueError, match="checkerboard"):  # the plain ANFIC has no context to keep
        ms.init_from(ANFIC(ANFICConfig(N=16, M=64, hyper_N=16, qe_width=8)).state_dict())
    ms.init_from(single.state_dict())
    for name, p in single.state_dict().items():
        q = ms.state_dict()[name]
        if q.shape == p.shape:
            assert torch.equal(p, q), name
        else:  # the widened conditional-hyperprior inputs: old weights, zeros for the coarse context
            assert torch.equal(q[:, : p.shape[1]], p) and not q[:, p.shape[1]:].any(), name


def test_a_previous_release_used_as_init_keeps_its_own_record():
    # Pinning an older release (the MS ablation's base) must continue its step count, not restart at 0.
    from anfcodec.training.train import _shipped_entry
    from anfcodec.zoo import WEIGHTS_DIR, manifest
    for entry in [*manifest()["models"].values(), *manifest().get("previous", [])]:
        assert _shipped_entry(WEIGHTS_DIR / entry["file"])["sha256"] == entry["sha256"]
    assert _shipped_entry(WEIGHTS_DIR / "no-such-file.pt") == {}


def test_extending_the_qualities_trains_only_the_new_ones(tmp_path):
    import torch
    from conftest import synthetic_image
    from anfcodec.models import ARCHITECTURES
    from anfcodec.training.train import train
    data = tmp_path / "photos"
    data.mkdir()
    for i in range(3):
        synthetic_image(96, 96, seed=i).save(data / f"p{i}.png")
    config = ARCHITECTURES["anfic-ckbd"].from_config({"arch": "anfic-ckbd", "N": 16, "M": 64, "hyper_N": 16,
                                                      "qe_width": 8}).config
    opts = TrainOptions(run_dir=tmp_path / "run", data=data, crop=64, batch=2, val_size=64, max_steps=2,
                        config=config.to_dict(), threads=torch.get_num_threads(), bf16=False)
    train(opts)
    before = torch.load(tmp_path / "run" / "last.pt", weights_only=False)["model"]
    # Resumed with two more lambdas (Adam's moments of the resized tables restart), training only those.
    opts.lambdas, opts.extend_from, opts.max_steps = tuple(config.lambdas) + (0.2, 0.43), 8, 5
    train(opts)
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    after = state["model"]
    assert state["config"]["lambdas"][-2:] == [0.2, 0.43] and state["counters"]["step"] == 5
    for name, p in before.items():
        if name in ("log_gain", "post_filter.strength", "log_lambdas"):
            assert torch.equal(after[name][:8], p[:8]), name
        else:
            assert torch.equal(after[name], p), name
    moved = after["log_gain"][8:] - torch.stack([2 * p[7] - p[6] for p in [before["log_gain"]]] * 2)
    assert moved.abs().max() > 0  # the new rows left their extrapolated start
    with pytest.raises(ValueError, match="no qualities above 10"):
        from anfcodec.training.train import train_only_qualities_above
        from anfcodec.models import build_model
        train_only_qualities_above(build_model(state["config"]), 10)


def test_a_frozen_base_trains_only_the_modules_the_grown_model_added(tmp_path):
    import torch
    from conftest import synthetic_image
    from anfcodec.models import ANFICCheckerboard, CheckerboardConfig, MSANFIC
    from anfcodec.training.train import train, train_only_fresh_modules
    data = tmp_path / "photos"
    data.mkdir()
    for i in range(3):
        synthetic_image(96, 96, seed=i).save(data / f"p{i}.png")
    small = {"N": 16, "M": 64, "hyper_N": 16, "qe_width": 8, "context_N": 16, "fusion_N": 32}
    base = ANFICCheckerboard(CheckerboardConfig(**small))
    torch.save(base.state_dict(), tmp_path / "base.pt")
    opts = TrainOptions(run_dir=tmp_path / "run", data=data, crop=64, batch=2, val_size=64, max_steps=3,
                        config={**CheckerboardConfig(**small).to_dict(), "arch": "ms-anfic"}, init=tmp_path / "base.pt",
                        threads=torch.get_num_threads(), bf16=False, freeze_base=True)
    train(opts)
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=False)["model"]
    start = MSANFIC.from_config(opts.config)
    start.init_from(base.state_dict())
    masks = start.fresh_masks()
    for name, v in start.named_parameters():
        v = v.detach()
        if name in masks:  # widened conditioning: the old columns stay, the new ones (zero at first) train
            assert torch.equal(state[name][~masks[name]], v[~masks[name]]), name
            assert state[name][masks[name]].abs().max() > 0, name
        elif not name.startswith(start.fresh_modules):
            assert torch.equal(state[name], v), name  # the base, gains and entropy tables included
    from anfcodec.models import ANFIC, ANFICConfig
    with pytest.raises(ValueError, match="adds no modules"):
        train_only_fresh_modules(ANFIC(ANFICConfig(N=16, M=64, hyper_N=16, qe_width=8)))


def test_set_overrides_a_new_runs_config_and_refuses_unknown_fields(tmp_path):
    import torch
    from click.testing import CliRunner
    from conftest import synthetic_image
    from anfcodec.cli import main
    from anfcodec.models import CheckerboardConfig, ANFICCheckerboard
    data = tmp_path / "photos"
    data.mkdir()
    for i in range(3):
        synthetic_image(128, 128, seed=i).save(data / f"p{i}.png")  # validation crops of whole coarse regions
    small = {"N": 16, "M": 64, "hyper_N": 16, "qe_width": 8, "context_N": 16, "fusion_N": 32}
    torch.save(ANFICCheckerboard(CheckerboardConfig(**small)).state_dict(), tmp_path / "base.pt")
    # --init of a bare state dict takes the run's config from the command line's defaults: give the
    # small widths through --set too, which is what the option is for.
    args = ["train", "--data", str(data), "--crop", "64", "--max-steps", "2", "--no-bf16", "--init",
            str(tmp_path / "base.pt"), "--arch", "ms-anfic", "--threads", "1"]
    sets = [a for k, v in small.items() for a in ("--set", f"{k}={v}")]
    r = CliRunner().invoke(main, [*args, "--run-dir", str(tmp_path / "bad"), *sets, "--set", "coarse_explor=0.5"])
    assert r.exit_code != 0 and "no config field coarse_explor" in str(r.exception)
    r = CliRunner().invoke(main, [*args, "--run-dir", str(tmp_path / "run"), *sets, "--set", "coarse_explore=0.25",
                                  "--set", "aux_gain_gradient=False"])
    assert r.exit_code == 0, r.output
    config = torch.load(tmp_path / "run" / "last.pt", weights_only=False)["config"]
    assert config["coarse_explore"] == 0.25 and config["aux_gain_gradient"] is False
