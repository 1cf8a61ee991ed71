"""Stage keys hash exactly what a stage reads: stable, order-free, shared where they should be."""
from __future__ import annotations

import pytest

from ambient_bench.config.suite import load_suite
from ambient_bench.engine.keys import canonical_json, stage_key
from ambient_bench.engine.cells import cell_stages
from ambient_bench.registry import CORRUPTIONS

SUITE = """
suite: keys
defaults:
  dataset: digits
  mix: {corruption: {name: gaussian_blur, sigma: 0.6}}
  method: clean_only
  train: {duration_kimg: 1}
  evaluate: {metrics: [fd_digits]}
grid:
  mix.corruption.sigma: [0.6, 1.0]
  method: [clean_only, all_data]
"""


def stages_of(write_suite, overrides=()):
    suite = load_suite(write_suite(SUITE), list(overrides))
    return {(c.config["method"]["name"], c.config["mix"]["corruption"]["sigma"]): cell_stages(c.config)
            for c in suite.cells}


def test_canonical_json_ignores_key_order():
    shuffled = {"b": 1, "a": {"y": 2.0, "x": [1, 2]}}
    assert canonical_json(shuffled) == canonical_json({"a": {"x": [1, 2], "y": 2.0}, "b": 1})
    assert stage_key("t", 1, {"a": 1, "b": 2}) == stage_key("t", 1, {"b": 2, "a": 1})
    assert stage_key("t", 1, {"a": 1}) != stage_key("t", 2, {"a": 1})
    assert canonical_json({"s": float("inf")}) == '{"s":"inf"}'


def test_key_is_stable_across_releases(write_suite):
    # Changing this literal means every stored run is recomputed: only do it on purpose
    # (bump a version instead when behaviour changes).
    stages = stages_of(write_suite)[("all_data", 0.6)]
    # changed on purpose when dataset `digits` gained `classes` (issue 4), and when the mix stage
    # (version 3) started keeping the dataset's class labels for class-conditional training (issue 5)
    assert stages["mix"].key == "5b91018b2cae6b7b23a690249dacf8f90469ac07a1e4f5b2cbb132856e2009a8"


def test_clean_only_is_shared_across_corruption_levels(write_suite):
    stages = stages_of(write_suite)
    for name in ("mix", "annotate", "train", "sample", "evaluate:fd_digits"):
        assert stages[("clean_only", 0.6)][name].key == stages[("clean_only", 1.0)][name].key
        assert stages[("all_data", 0.6)][name].key != stages[("all_data", 1.0)][name].key
    # the metric's setup depends only on the metric and the reference data
    assert len({s["setup:fd_digits"].key for s in stages.values()}) == 1


def test_non_semantic_fields_do_not_change_keys(write_suite):
    base = stages_of(write_suite)[("all_data", 0.6)]
    other = stages_of(write_suite, ["train.device=cpu", "train.checkpoint_kimg=3", "train.log_every=7",
                                    "sample.batch=17"])[("all_data", 0.6)]
    assert all(base[n].key == other[n].key for n in base)


def test_semantic_fields_change_exactly_their_stage_and_downstream(write_suite):
    base = stages_of(write_suite)[("all_data", 0.6)]
    lr = stages_of(write_suite, ["train.lr=1e-4"])[("all_data", 0.6)]
    assert lr["mix"].key == base["mix"].key and lr["annotate"].key == base["annotate"].key
    assert lr["train"].key != base["train"].key and lr["sample"].key != base["sample"].key
    steps = stages_of(write_suite, ["sample.steps=9"])[("all_data", 0.6)]
    assert steps["train"].key == base["train"].key and steps["sample"].key != base["sample"].key


def test_component_version_enters_the_key(write_suite, monkeypatch):
    base = stages_of(write_suite)[("all_data", 0.6)]
    monkeypatch.setattr(CORRUPTIONS.get("gaussian_blur"), "version", 99)
    bumped = stages_of(write_suite)[("all_data", 0.6)]
    assert bumped["mix"].key != base["mix"].key and bumped["train"].key != base["train"].key


@pytest.mark.parametrize("name", ["mix", "annotate", "train", "sample"])
def test_stage_material_records_upstream_keys(write_suite, name):
    stage = stages_of(write_suite)[("all_data", 1.0)][name]
    assert set(stage.material["upstream"]) == set(stage.deps)


def test_clean_only_ignores_corruption_lists_and_ood_sources(write_suite):
    def stages(*overrides):
        text = SUITE.replace("  mix.corruption.sigma: [0.6, 1.0]\n", "")
        return {c.config["method"]["name"]: cell_stages(c.config)
                for c in load_suite(write_suite(text), list(overrides)).cells}

    plain = stages()
    listed = stages("mix.corruption=[gaussian_blur, {name: gaussian_blur, sigma: 2.0}]")
    with_ood = stages("mix.ood=[{name: digits, resolution: 8}]")
    for variant in (listed, with_ood):
        assert variant["clean_only"]["train"].key == plain["clean_only"]["train"].key
        assert variant["all_data"]["mix"].key != plain["all_data"]["mix"].key
    assert with_ood["all_data"]["mix"].material["mix"]["ood"][0]["params"]["resolution"] == 8


AUGMENT_SUITE = """
suite: keys_augment
defaults:
  dataset: {name: digits, resolution: 16}
  mix: {clean_fraction: 0.1, corruption: {name: gaussian_blur, sigma: 0.6}}
  method: {name: ambient_o, annotate: classifier, num_sigmas: 16, trials: 1, classifier: {duration_kimg: 1}}
  network: {model_channels: 16, channel_mult: [1, 2], num_blocks: 1}
  train: {duration_kimg: 1}
  evaluate: {metrics: [fd_digits]}
"""
AUGMENTED = ["train.augment_p=0.12", "network.augment_dim=9", "method.classifier.augment_p=0.12"]


def test_augmentation_version_enters_only_augmented_training_keys(write_suite):
    # Keys computed at f7424a9, before the pipe became EDM's (issue 27): unaugmented stages (every committed
    # result) keep them; augmented diffusion and classifier trainings get new keys, so they retrain.
    def keys(overrides):
        (cell,) = load_suite(write_suite(AUGMENT_SUITE), overrides).cells
        stages = cell_stages(cell.config)
        return stages["train"].key, stages["classifier:noise"].key

    assert keys([]) == ("305e5b2bd02d0933ce38f9127f3736e44ba932657cdbeac4b8a1198c0b8d7aed",
                        "8d0034d586f81190fa8265a65369c7333cc868a1c769da58890223341faf7e02")
    train, classifier = keys(AUGMENTED)
    assert train != "8a1d16efbf795d7eacbf830cfa4257d765394a1f274170eb0f1a05d884bb7186"
    assert classifier != "00f1f284f21364f9e8e7d140bc6e2a5344cf85d84b8366ea078a647bc51451b5"
    assert (train, classifier) != keys([])
