"""Suite YAML: strict schema with file:line errors, grid expansion, exclusions, overrides."""
from __future__ import annotations

import pytest

from ambient_bench import UserError
from ambient_bench.config.suite import load_suite
from ambient_bench.config.yamlio import parse, parse_scalar

BASE = """
suite: t
defaults:
  dataset: digits
  mix:
    clean_fraction: 0.1
    corruption: {name: gaussian_blur, sigma: 0.6}
  method: {name: ambient_o, sigma_min: 1.0}
  train:
    duration_kimg: 1
    seed: 3
    warmup_kimg: 5
  evaluate:
    metrics: [fd_digits]
"""


def error_of(write_suite, text, overrides=()):
    with pytest.raises(UserError) as err:
        load_suite(write_suite(text), list(overrides))
    return str(err.value)


def test_misspelled_key_names_file_line_and_suggestion(write_suite):
    message = error_of(write_suite, BASE.replace("clean_fraction: 0.1", "clean_fracton: 0.1"))
    assert "suite.yaml:5:" in message
    assert "unknown key 'clean_fracton'" in message and "did you mean 'clean_fraction'?" in message
    assert "\n" not in message


def test_unknown_top_level_key_and_section(write_suite):
    message = error_of(write_suite, BASE + "gird: {}\n")
    assert "suite.yaml:14:" in message and "did you mean 'grid'?" in message
    message = error_of(write_suite, BASE.replace("  method:", "  methd:"))
    assert "suite.yaml:7:" in message and "did you mean 'method'?" in message


def test_unknown_corruption_in_grid_points_at_its_line(write_suite):
    message = error_of(write_suite, BASE + "grid:\n  mix.corruption:\n    - gaussian_blur\n    - gausian_blurr\n")
    assert "suite.yaml:17:" in message
    assert "unknown corruption 'gausian_blurr'" in message and "did you mean 'gaussian_blur'?" in message


def test_unknown_method_and_bad_value(write_suite):
    message = error_of(write_suite, BASE.replace("name: ambient_o,", "name: ambiento,"))
    assert "suite.yaml:7:" in message and "did you mean 'ambient_o'?" in message
    message = error_of(write_suite, BASE.replace("clean_fraction: 0.1", "clean_fraction: 1.5"))
    assert "suite.yaml:5:" in message and "must be ≤ 1" in message


def test_yaml_traps(write_suite):
    message = error_of(write_suite, BASE.replace("    seed: 3\n", "    seed: 3\n    seed: 4\n"))
    assert "suite.yaml:11:" in message and "appears twice" in message
    data, lines = parse("lr: 1e-3\nn: 1_000\n", "x")
    assert data == {"lr": 0.001, "n": 1000} and lines[("lr",)] == 1
    assert parse_scalar("false") is False and parse_scalar("0") == 0 and parse_scalar("[0, 1]") == [0, 1]


def test_grid_is_cartesian_with_exclusions_and_seeds(write_suite):
    suite = load_suite(write_suite(BASE + """
grid:
  mix.corruption.sigma: [0.6, 1.0]
  method: [clean_only, all_data, {name: ambient_o, sigma_min: 1.0}, {name: ambient_o, sigma_min: 2.0}]
  train.seed: [0, 1, 2]
exclude:
  - {mix.corruption.sigma: 0.6, method.sigma_min: 2.0}
  - {mix.corruption.sigma: 1.0, method: {name: ambient_o, sigma_min: 1.0}}
"""))
    assert len(suite.cells) == 2 * 4 * 3 - 2 * 3
    assert suite.axes == ["mix.corruption.sigma", "method", "train.seed"]
    pairs = {(c.config["mix"]["corruption"]["sigma"], c.config["method"].get("sigma_min")) for c in suite.cells}
    assert (0.6, 2.0) not in pairs and (1.0, 1.0) not in pairs and (1.0, 2.0) in pairs
    assert {c.config["train"]["seed"] for c in suite.cells} == {0, 1, 2}
    clean = next(c for c in suite.cells if c.config["method"]["name"] == "clean_only")
    # the defaults' sigma_min is not inherited
    assert clean.config["method"] == {"name": "clean_only", "objective": "edm"}


def test_overrides_take_precedence_and_zero_wins(write_suite):
    path = write_suite(BASE + "grid:\n  train.seed: [0, 1]\n")
    cfg = load_suite(path, ["train.warmup_kimg=0", "train.lr=1e-4", "train.ema_rampup=null"]).cells[0].config
    assert cfg["train"]["warmup_kimg"] == 0.0 and cfg["train"]["lr"] == 1e-4 and cfg["train"]["ema_rampup"] is None
    suite = load_suite(path, ["train.seed=0"])  # overriding an axis replaces it
    assert [c.config["train"]["seed"] for c in suite.cells] == [0]
    suite = load_suite(path, ["train.seed=[4, 5, 6]"])
    assert [c.config["train"]["seed"] for c in suite.cells] == [4, 5, 6]
    cfg = load_suite(path, ["method=all_data"]).cells[0].config
    assert cfg["method"] == {"name": "all_data", "objective": "edm"}


def test_override_errors_name_the_override(write_suite):
    path = write_suite(BASE)
    assert "command-line override 'train.lerning_rate=3'" in error_of(write_suite, BASE, ["train.lerning_rate=3"])
    assert "expected key=value" in error_of(write_suite, BASE, ["train.lr"])
    with pytest.raises(UserError, match="unknown section 'trian'.*did you mean 'train'"):
        load_suite(path, ["trian.lr=1"])


def test_missing_file_and_empty_grid(write_suite, tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_suite(tmp_path / "nope.yaml")
    message = error_of(write_suite, BASE + "grid:\n  train.seed: []\n")
    assert "non-empty list" in message


def test_identical_cells_are_deduplicated(write_suite):
    suite = load_suite(write_suite(BASE + "grid:\n  train.seed: [0, 0, 1]\n"))
    assert len(suite.cells) == 2


def test_exclusions_match_resolved_values_and_reject_unknown_keys(write_suite):
    grid = ("grid:\n  method: [all_data, {name: ambient_o, sigma_min: 1.0}, "
            "{name: ambient_o, sigma_min: 1.0, s_max: 2.0}]\n")
    suite = load_suite(write_suite(BASE + grid + "exclude:\n  - {method.s_max: 4.0}\n"))  # 4.0 is the default
    assert [c.config["method"].get("s_max") for c in suite.cells] == [None, 2.0]
    message = error_of(write_suite, BASE + grid + "exclude:\n  - {method.s_maxx: 4.0}\n")
    assert "suite.yaml:17:" in message and "exclude key 'method.s_maxx'" in message
    assert "did you mean 'method.s_max'" in message


def test_a_list_of_grids_is_the_union_of_their_products(write_suite):
    text = BASE + """grid:
  - {method: [clean_only], train.seed: [0]}
  - mix.corruption.sigma: [0.6, 1.0]
    method: [all_data, {name: ambient_o, sigma_min: 1.0}]
"""
    suite = load_suite(write_suite(text))
    labels = [(c.config["method"]["name"], c.config["mix"]["corruption"]["sigma"]) for c in suite.cells]
    assert labels == [("clean_only", 0.6), ("all_data", 0.6), ("ambient_o", 0.6), ("all_data", 1.0),
                      ("ambient_o", 1.0)]
    assert suite.axes == ["method", "train.seed", "mix.corruption.sigma"]
    # an override of an axis replaces it in every grid, and adds it where it was not one
    seeds = load_suite(write_suite(text), ["train.seed=[3, 4]"])
    assert len(seeds.cells) == 10 and {c.config["train"]["seed"] for c in seeds.cells} == {3, 4}
    message = error_of(write_suite, BASE + "grid:\n  - {method: [clean_only]}\n  - method: [gausian]\n")
    assert "suite.yaml:" in message and "unknown method 'gausian'" in message
