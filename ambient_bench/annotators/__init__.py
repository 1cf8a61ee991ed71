"""Annotators: at which noise levels a recipe uses each low-quality or out-of-distribution sample
(``list annotator``), one small module each.

A method names them in its slots (``ambient_o``: ``annotate`` for the low-quality images' sigma_min,
``ood_annotate`` for the out-of-distribution images' sigma_max) and runs them in that order on one
``Annotation``. The machinery they call (classifier training, curves, crops, quality scores) lives in
``ambient_bench.annotation``.
"""
