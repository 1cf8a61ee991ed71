"""Views: known linear views of the data whose own diffusion models a composite score reuses
(``list view``; Bootstrapping Diffusion, seed notes §2). One small module each: ``pool`` (f×f average
pooling, the mix's ``pixelate`` images) and ``crops`` (disjoint grid cells, the mix's ``grid_crop``
images). The operators themselves live in ``ambient_bench.diffusion.views``.
"""
