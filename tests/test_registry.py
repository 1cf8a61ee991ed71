"""Registries: did-you-mean errors, parameter validation, plugins through the public API."""
from __future__ import annotations

import json

import pytest

import ambient_bench
from ambient_bench import CORRUPTIONS, METHODS, Corruption, Param, UserError, register_corruption
from ambient_bench.config.suite import load_suite
from ambient_bench.registry import Registry


def test_unknown_name_suggests_and_lists():
    with pytest.raises(UserError) as err:
        CORRUPTIONS.get("gausian_blur")
    message = str(err.value)
    assert "unknown corruption 'gausian_blur'" in message
    assert "did you mean 'gaussian_blur'?" in message
    assert "available:" in message and "gaussian_blur" in message.split("available:")[1]


def test_unknown_name_without_close_match_has_no_suggestion():
    with pytest.raises(UserError) as err:
        METHODS.get("zzz")
    assert "did you mean" not in str(err.value)
    assert "clean_only" in str(err.value)


def test_baselines_registered_through_entry_point():
    names = METHODS.names()
    assert {"clean_only", "all_data", "ambient_o"} <= set(names)
    assert METHODS.get("clean_only").__module__ == "baselines.clean_only"
    assert METHODS.get("clean_only").uses_bad_data is False


def test_params_validated_with_suggestions():
    cls = CORRUPTIONS.get("gaussian_blur")
    assert cls(sigma=0.6).p.sigma == 0.6
    assert cls().p.truncate == 4.0  # default filled
    with pytest.raises(UserError, match="unknown key 'sigmaa'.*did you mean 'sigma'"):
        cls(sigmaa=1.0)
    with pytest.raises(UserError, match="must be ≥ 0"):
        cls(sigma=-1.0)
    with pytest.raises(UserError, match="expected a number"):
        cls(sigma="wide")


def test_required_param_is_enforced():
    with pytest.raises(UserError, match="missing required key 'steps'"):
        CORRUPTIONS.get("compose")()
    with pytest.raises(UserError, match="annotate: fixed needs sigma_min"):  # a combination, checked by the class
        METHODS.get("ambient_o")()


def test_version_and_spec_enter_identity():
    blur = CORRUPTIONS.build({"name": "gaussian_blur", "sigma": 0.4})
    assert blur.spec() == {"name": "gaussian_blur", "version": 1, "params": {"sigma": 0.4, "truncate": 4.0}}


def test_register_rejects_non_components_and_collisions():
    registry = Registry("corruption", "ambient_bench.components:Corruption")

    with pytest.raises(TypeError):
        registry.register("bad")(dict)

    @registry.register("twice")
    class First(Corruption):
        def apply(self, x, rngs):
            return x

    with pytest.raises(UserError, match="registered twice"):
        @registry.register("twice")
        class Second(Corruption):
            def apply(self, x, rngs):
                return x


def test_user_plugin_file_registers_a_corruption(write_suite, tmp_path):
    (tmp_path / "my_plugin.py").write_text(
        "from ambient_bench import Corruption, Param, register_corruption\n"
        "@register_corruption('test_invert')\n"
        "class Invert(Corruption):\n"
        "    '''1 - x.'''\n"
        "    params = {'strength': Param(1.0, ge=0, le=1)}\n"
        "    def apply(self, x, rngs):\n"
        "        return x + self.p.strength * (1 - 2 * x)\n")
    suite = write_suite("""
        suite: plugged
        plugins: [my_plugin.py]
        defaults:
          dataset: digits
          mix: {corruption: {name: test_invert, strength: 0.5}}
          method: all_data
          train: {duration_kimg: 1}
          evaluate: {metrics: [fd_digits]}
    """)
    cell = load_suite(suite).cells[0]
    assert cell.config["mix"]["corruption"] == {"name": "test_invert", "strength": 0.5}
    assert "test_invert" in CORRUPTIONS.names()


def test_public_api_exports():
    for name in ("register_corruption", "register_dataset", "register_method", "register_metric", "Param",
                 "Corruption", "Dataset", "Method", "Metric"):
        assert hasattr(ambient_bench, name)
    assert register_corruption == CORRUPTIONS.register
    assert Param(1.0).describe() == "float, default 1.0"


PLUGIN_OBJECTIVE = '''
from ambient_bench import Objective, Param, register_objective


@register_objective("edm_l1")
class EDML1(Objective):
    """EDM's weighting on the absolute error."""
    version = 1
    params = {"scale": Param(1.0, "multiplies the loss", gt=0)}

    def loss(self, denoiser, batch):
        sigma = batch.sigma.float().to(batch.x0.device)
        s = sigma.reshape(-1, 1, 1, 1)
        weight = (s ** 2 + batch.sigma_data ** 2).sqrt() / (s * batch.sigma_data)
        error = (denoiser(batch.x0 + s * batch.eps, sigma) - batch.x0).abs()
        return self.p.scale * (weight * error).flatten(1).sum(1)
'''


@pytest.mark.slow
def test_a_plugin_objective_named_in_a_suite_trains_and_reaches_the_table(tmp_path):
    import csv

    from conftest import TINY_CELL, run_cli

    (tmp_path / "edm_l1.py").write_text(PLUGIN_OBJECTIVE)
    (tmp_path / "loss_table.yaml").write_text(
        "id: losses\ntitle: one row per objective\nrows: {key: method.objective, header: Loss}\n"
        "columns: {key: mix.corruption.sigma, label: 'blur {}'}\n"
        "values: [{quantity: fd_digits, label: FD_digits, fmt: '{:.1f}', better: lower}]\n")
    suite = tmp_path / "plugged.yaml"
    suite.write_text(TINY_CELL.format(name="plugged", results=tmp_path / "results")
                     + "plugins: [edm_l1.py]\ngrid:\n  method: [all_data, {name: all_data, objective: edm_l1, "
                       "scale: 2.0}]\ntables: [loss_table.yaml]\n")
    result = run_cli("run", str(suite), "--runs", str(tmp_path / "runs"))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    rows = list(csv.DictReader((tmp_path / "results" / "results.csv").open()))
    assert {(r["method.objective"], r["method.scale"]) for r in rows if r["quantity"] == "fd_digits"} == \
        {("edm", ""), ("edm_l1", "2")}
    table = (tmp_path / "results" / "losses.md").read_text()
    assert "edm_l1" in table and "edm" in table.replace("edm_l1", "")
    trained = [json.loads(p.read_text())["reads"]["objective"]
               for p in (tmp_path / "runs" / "train").glob("*/stage.json")]
    assert {"name": "edm_l1", "version": 1, "params": {"scale": 2.0}} in trained
    # one annotate stage serves both: the objective is not in its key
    assert len(list((tmp_path / "runs" / "annotate").glob("*/DONE"))) == 1
    listed = run_cli("list", "objective", "--suite", str(suite))
    assert listed.returncode == 0 and "edm_l1  (version 1)  EDM's weighting on the absolute error." in listed.stdout
    assert "edm_l1" not in run_cli("list", "objective").stdout  # only where the suite names it
