"""Corruption generators; each module registers one or more with ``register_corruption``."""
