"""The training loop resumes exactly: a run stopped and resumed ends with the same weights."""
from __future__ import annotations

import torch

from ambient_bench import fileio
from ambient_bench.data.mixing import mix
from ambient_bench.methods.ambient_o import AmbientO
from ambient_bench.registry import CORRUPTIONS, DATASETS
from ambient_bench.training.loop import CHECKPOINT, NETWORK, train

NET = dict(model_channels=8, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[8], dropout=0.1)
CFG = dict(device="cpu", seed=3, batch=16, duration_kimg=0.32, lr=2e-3, warmup_kimg=0.1, ema_halflife_kimg=0.1,
           ema_rampup=0.05, grad_clip=1.0, P_mean=-1.2, P_std=1.2, sigma_data=0.5, checkpoint_kimg=0.05, log_every=5,
           augment_p=0.0, snapshot_kimg=None, precision="fp32", tf32=False, channels_last=False, compile=False)
OBJECTIVE = {"name": "ambient"}  # the paper's loss with its buffer, as ambient_o trains


def training_set():
    data = DATASETS.build({"name": "digits"}).load()
    mixed = mix(data, 0.1, [CORRUPTIONS.build({"name": "gaussian_blur", "sigma": 1.0})], seed=0)
    ann = AmbientO(sigma_min=1.0).annotate(mixed)
    return {"images": mixed.images, "noise": mixed.noise, "sigma_min": ann.sigma_min, "sigma_max": ann.sigma_max}


def test_interrupted_training_resumes_bit_for_bit(tmp_path):
    data = training_set()
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    straight.mkdir(), interrupted.mkdir()
    assert train(data, NET, CFG, straight, objective=OBJECTIVE,
                 log=lambda m: None)
    messages = []
    assert not train(data, NET, CFG, interrupted, stop_at_step=7, objective=OBJECTIVE, log=messages.append)
    assert fileio.torch_load(interrupted / CHECKPOINT)["step"] == 7 and not (interrupted / NETWORK).exists()
    assert train(data, NET, CFG, interrupted, objective=OBJECTIVE, log=messages.append)
    assert messages == ["resuming from checkpoint at step 7"]
    a, b = fileio.torch_load(straight / NETWORK)["ema"], fileio.torch_load(interrupted / NETWORK)["ema"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_different_seeds_give_different_models(tmp_path):
    data = training_set()
    runs = []
    for seed in (0, 1):
        out = tmp_path / str(seed)
        out.mkdir()
        train(data, NET, {**CFG, "seed": seed, "duration_kimg": 0.064}, out, objective=OBJECTIVE,
                 log=lambda m: None)
        runs.append(fileio.torch_load(out / NETWORK)["ema"])
    assert any(not torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


def test_class_conditional_training_uses_the_labels(tmp_path):
    """label_dim > 0: the network sees one-hot classes; a wrong label_dim is a one-line error."""
    import pytest

    from ambient_bench import UserError
    from ambient_bench.training.loop import load_network

    data = training_set()
    data["labels"] = DATASETS.build({"name": "digits"}).load().labels
    out = tmp_path / "conditional"
    out.mkdir()
    assert train(data, {**NET, "label_dim": 10}, {**CFG, "duration_kimg": 0.064}, out, objective=OBJECTIVE,
                 log=lambda m: None)
    net = load_network(out / NETWORK)
    assert net.label_dim == 10
    x, sigma = torch.randn(2, 1, 8, 8), torch.tensor([1.0, 1.0])
    zero, three = (torch.nn.functional.one_hot(torch.tensor([c, c]), 10).float() for c in (0, 3))
    assert not torch.equal(net(x, sigma, class_labels=zero), net(x, sigma, class_labels=three))
    with pytest.raises(UserError, match="label_dim: 10"):
        train(data, {**NET, "label_dim": 5}, CFG, tmp_path, objective=OBJECTIVE,
                 log=lambda m: None)
    with pytest.raises(UserError, match="needs a labelled dataset"):
        train({**data, "labels": None}, {**NET, "label_dim": 10}, CFG, tmp_path, objective=OBJECTIVE,
                 log=lambda m: None)


def test_gradient_accumulation_matches_the_whole_batch_at_once(tmp_path):
    """train.batch_gpu splits each step's batch into passes; the update is the whole batch's (to float rounding)."""
    data = training_set()
    cfg = {**CFG, "duration_kimg": 0.08}
    net = {**NET, "dropout": 0.0}  # dropout masks depend on the pass split: off for the comparison
    runs = {}
    for micro in (None, 5):
        out = tmp_path / str(micro)
        out.mkdir()
        assert train(data, net, {**cfg, "batch_gpu": micro}, out, objective=OBJECTIVE, log=lambda m: None)
        runs[micro] = fileio.torch_load(out / NETWORK)["ema"]
    whole, split = runs[None], runs[5]
    assert all(torch.allclose(whole[k], split[k], atol=1e-5, rtol=1e-4) for k in whole)
    assert any(not torch.equal(whole[k], split[k]) for k in whole if whole[k].is_floating_point())  # really split


def test_edm2_with_the_power_ema_resumes_bit_for_bit_and_stores_its_profiles(tmp_path):
    from ambient_bench.training.loop import load_network, profile_name

    data = training_set()
    edm2 = {"preset": "edm2_tiny", "label_dim": 0}
    cfg = {**CFG, "P_mean": -0.4, "P_std": 1.0, "adam_beta2": 0.99, "lr_ref_kimg": 0.1, "ema_sigma_rels": [0.05, 0.1],
           "ema_profile_kimg": 0.08, "grad_clip": None}
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    straight.mkdir(), interrupted.mkdir()
    assert train(data, edm2, cfg, straight, objective=OBJECTIVE, log=lambda m: None)
    assert not train(data, edm2, cfg, interrupted, stop_at_step=9, objective=OBJECTIVE, log=lambda m: None)
    assert train(data, edm2, cfg, interrupted, objective=OBJECTIVE, log=lambda m: None)
    a, b = fileio.torch_load(straight / NETWORK)["ema"], fileio.torch_load(interrupted / NETWORK)["ema"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert sorted(p.name for p in straight.glob("phema-*.pt")) == [profile_name(k) for k in (0.08, 0.16, 0.24, 0.32)]
    net = load_network(straight / NETWORK)
    assert type(net).__name__ == "EDM2Precond" and torch.isfinite(net(torch.randn(2, 1, 8, 8), torch.ones(2))).all()


def test_fp16_with_loss_scaling_trains_and_resumes_bit_for_bit(tmp_path):
    data = training_set()
    cfg = {**CFG, "precision": "fp16", "duration_kimg": 0.16, "grad_clip": None}
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    straight.mkdir(), interrupted.mkdir()
    assert train(data, {"preset": "edm2_tiny"}, cfg, straight, objective=OBJECTIVE, log=lambda m: None)
    assert not train(data, {"preset": "edm2_tiny"}, cfg, interrupted, stop_at_step=4, objective=OBJECTIVE,
                     log=lambda m: None)
    assert (interrupted / "grad_scaler.pt").exists()  # the loss scale travels with the checkpoint
    assert train(data, {"preset": "edm2_tiny"}, cfg, interrupted, objective=OBJECTIVE, log=lambda m: None)
    a, b = fileio.torch_load(straight / NETWORK)["ema"], fileio.torch_load(interrupted / NETWORK)["ema"]
    assert all(torch.equal(a[k], b[k]) for k in a) and all(torch.isfinite(v).all() for v in a.values())


def test_the_ema_probe_scores_the_ema_weights_and_leaves_training_alone(tmp_path, monkeypatch):
    """At every checkpoint stats.jsonl gets the EMA model's denoising error per σ bin on fixed clean images;
    the last equals the error of the written network, and training without the probe gives the same weights."""
    import json

    from ambient_bench.data.images import uint8_to_model
    from ambient_bench.seeding import seed_for
    from ambient_bench.training import curves
    from ambient_bench.training.loop import load_network

    data = training_set()
    probed, plain = tmp_path / "probed", tmp_path / "plain"
    probed.mkdir(), plain.mkdir()
    assert train(data, NET, CFG, probed, objective=OBJECTIVE, log=lambda m: None)
    lines = [json.loads(line) for line in (probed / "stats.jsonl").read_text().splitlines()]
    probes = [line for line in lines if "ema_loss" in line]
    assert [p["step"] for p in probes] == [3, 6, 9, 12, 15, 18, 20]  # checkpoint_kimg 0.05 at batch 16, and the end
    assert set(probes[-1]["ema_loss_by_sigma"]) == set(curves.BIN_NAMES)

    rows = torch.argsort(data["sigma_min"].double(), stable=True)[:curves.PROBE_IMAGES]
    assert bool((data["sigma_min"][rows] == 0).all())  # the clean images
    again = curves.ema_denoising_error(load_network(probed / NETWORK), uint8_to_model(data["images"][rows]), None,
                                       CFG["sigma_data"], seed_for("ema-probe", CFG["seed"]))
    assert again["ema_loss_by_sigma"] == probes[-1]["ema_loss_by_sigma"]

    monkeypatch.setattr(curves, "ema_probe", lambda *args, **kwargs: None)
    assert train(data, NET, CFG, plain, objective=OBJECTIVE, log=lambda m: None)
    assert not any("ema_loss" in line for line in (plain / "stats.jsonl").read_text().splitlines())
    a, b = fileio.torch_load(probed / NETWORK)["ema"], fileio.torch_load(plain / NETWORK)["ema"]
    assert all(torch.equal(a[k], b[k]) for k in a)
