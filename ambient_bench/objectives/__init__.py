"""Training objectives: the per-sample loss of a batch, one small module each (``list objective``).

A method names its objective (``Method.objective``); the annotate stage stores it beside the
training set and the training loop calls ``loss(denoiser, batch)`` on every step.
"""
