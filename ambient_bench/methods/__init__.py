"""The paper's methods (Ambient-o variants); the baselines live in the top-level ``baselines``."""
