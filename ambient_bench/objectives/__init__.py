"""Training objectives: the per-sample loss of a batch, one small module each (``list objective``).

A method names its objective (``Method.objective``); the annotate stage stores it beside the
training set and the training loop calls ``loss(denoiser, batch)`` on every step.

Keys: the objective reaches the training stage's key only through the method that names it (the
method's name, version and parameters are in the annotate key, which the train key holds). Until
objectives enter the train key themselves, a change to an objective's numbers must bump its
``version`` *and* the version of every method that names it.
"""
