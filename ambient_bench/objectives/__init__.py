"""Training objectives: the per-sample loss of a batch, one small module each (``list objective``).

Every method names its objective in its ``objective`` slot (a suite may choose another, e.g. a
plugin's); the train stage builds it and calls ``loss(denoiser, batch)`` on every step, and its
``buffer()`` narrows where low-quality samples are drawn. The objective's name, version and
parameters enter the train stage's key, not the annotate stage's: changing one retrains without
annotating again.
"""
