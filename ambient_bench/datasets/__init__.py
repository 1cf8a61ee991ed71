"""Datasets of clean images; each module registers one or more with ``register_dataset``."""
