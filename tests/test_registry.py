"""Registries: did-you-mean errors, parameter validation, plugins through the public API."""
from __future__ import annotations

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
