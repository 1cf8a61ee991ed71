"""Property test: any mutation of a valid suite (keys, types, values, nesting) gives exit 0, or exit 2
with one line; never a traceback. Runs in the fast tier with a fixed derandomised seed."""
from __future__ import annotations

import copy
import io
import math
import tempfile
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from ambient_bench import cli

BASE = {
    "suite": "fuzz",
    "description": "a valid suite the test mutates",
    "defaults": {
        "dataset": {"name": "digits", "resolution": 8},
        "mix": {"clean_fraction": 0.5, "corruption": {"name": "gaussian_blur", "sigma": 0.6}},
        "method": {"name": "ambient_o", "sigma_min": 1.0},
        "network": {"model_channels": 8, "channel_mult": [1], "num_blocks": 1},
        "train": {"batch": 32, "duration_kimg": 0.2, "lr": 0.002},
        "sample": {"num": 32, "steps": 4},
        "evaluate": {"metrics": [{"name": "fd_digits", "epochs": 1}]},
    },
    "grid": {"method": ["clean_only", {"name": "ambient_o", "sigma_min": 1.0}], "train.seed": [0, 1]},
    "exclude": [{"method": "clean_only", "train.seed": 1}],
}

SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from([10**20, 2**31, -1, 0, 1, 7]),
    st.sampled_from([math.inf, -math.inf, math.nan, 1e308, 1e-9, 0.5, 2.0, -0.5]),
    st.sampled_from(["", "clean_only", "ambient_o", "digits", "gaussian_blur", "fd_digits", "fixed", "classifier",
                     "../../escape", "a/b", "x" * 300, "é", "1e-3", ".inf", "method.sigma_min", "train.seed"]),
    st.text(max_size=8))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=6) | SCALARS.filter(
                                                           lambda v: isinstance(v, str)), inner, max_size=3)),
                      max_leaves=6)
KEYS = st.sampled_from(["name", "sigma", "sigma_min", "annotate", "seed", "batch", "num", "steps", "metrics",
                        "duration_kimg", "resolution", "clean_fraction", "corruption", "ood", "classifier",
                        "quality_top_fraction", "tables", "plugins", "results_dir", "grid", "exclude", "nope",
                        "method.sigma_min", "train.seed", "mix.corruption.sigma"])


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, prefix + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, prefix + (i,))


@st.composite
def mutated_suites(draw):
    suite = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(suite) if p]
        path = draw(st.sampled_from(paths))
        parent = suite
        for part in path[:-1]:
            parent = parent[part]
        last = path[-1]
        action = draw(st.sampled_from(["replace", "delete", "add", "rename", "wrap_list", "wrap_dict"]))
        if action == "replace":
            parent[last] = draw(VALUES)
        elif action == "delete":
            del parent[last]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(KEYS)] = draw(VALUES)
        elif action == "add":
            parent.append(draw(VALUES))
        elif action == "rename" and isinstance(parent, dict):
            parent[str(last) + draw(st.sampled_from(["s", "_", "x"]))] = parent.pop(last)
        elif action == "wrap_list":
            parent[last] = [parent[last]]
        else:
            parent[last] = {draw(KEYS): parent[last]}
    return suite


@settings(max_examples=500, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(mutated_suites())
def test_mutated_suites_exit_0_or_2_with_one_line(suite):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "suite.yaml"
        path.write_text(yaml.safe_dump(suite, allow_unicode=True), encoding="utf-8")
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            code = cli.main(["plan", str(path), "--runs", str(Path(tmp) / "runs")])
        assert code in (0, 2), err.getvalue()
        if code == 2:
            assert err.getvalue().count("\n") == 1 and err.getvalue().startswith("error: "), err.getvalue()
        assert not (Path(tmp) / "runs").exists()  # plan writes nothing


SHADOWED = {  # a path of the defaults, and the grid axis that replaces it in every cell
    "method": ["clean_only", {"name": "ambient_o", "sigma_min": 1.0}],
    "mix.corruption": [{"name": "gaussian_blur", "sigma": 0.6}],
}


def _plan_code(suite: dict) -> tuple[int, str]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "suite.yaml"
        path.write_text(yaml.safe_dump(suite, allow_unicode=True), encoding="utf-8")
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            code = cli.main(["plan", str(path), "--runs", str(Path(tmp) / "runs")])
        assert not (Path(tmp) / "runs").exists()
        return code, err.getvalue()


@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.sampled_from(sorted(SHADOWED)), VALUES)
def test_a_defaults_value_every_cell_replaces_is_checked_as_a_cell_would(path, value):
    """Issue 29 item 9: a value in ``defaults`` that a grid axis replaces in every cell is refused exactly when the
    same value, with the axis gone, would be refused in the cells."""
    suite = {k: copy.deepcopy(v) for k, v in BASE.items() if k != "exclude"}
    section, _, leaf = path.partition(".")
    if leaf:
        suite["defaults"][section][leaf] = value
    else:
        suite["defaults"][section] = value
    suite["grid"] = {"train.seed": [0], path: SHADOWED[path]}
    shadowed, err = _plan_code(suite)
    del suite["grid"][path]
    used, _ = _plan_code(suite)
    assert shadowed == used, err
    if shadowed == 2:
        assert err.count("\n") == 1 and err.startswith("error: ") and "defaults." in err, err
