"""Baseline methods, registered through the public plugin API exactly as a user's package.

``pyproject.toml`` lists this package under the ``ambient_bench.plugins`` entry-point group,
so ``ambient_bench`` imports it the first time a method name is looked up.
"""
from baselines import all_data, clean_only, filter_finetune  # noqa: F401  (importing registers them)
