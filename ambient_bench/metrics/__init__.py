"""Sample-quality metrics; each module registers one or more with ``register_metric``."""
