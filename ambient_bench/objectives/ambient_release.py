"""The loss the official pixel code (CIFAR-10, FFHQ, AFHQ) really trains with: annotated samples
used only above b·sigma_min, as they are, with EDM's loss (the paper's variant is ``ambient``).

The release's training loop sets sigma_tn = min(sigma_min, sigma_max) of each annotation
(pixel-diffusion/training/training_loop.py:280). Its classifier and fixed annotators write
sigma_max = 0 for low-quality images and (0, 0) for clean ones, so sigma_tn = 0 for every
sample: no annotation noise is added (x_tn = x0, line 287) and lambda_amb = sigma⁴/(sigma² - 0)²
= 1 (training/loss.py:37). With sigma_n = 0 the ambient loss is EDM's loss:

    loss = lambda_EDM(sigma) · ||D(x0 + sigma·eps, sigma) - x0||²,  lambda_EDM = (sigma² + sd²)/(sigma·sd)²

where x0 is the stored image, corrupted or clean. What still separates the two kinds of sample is
where they are drawn (the sampler, torch_utils/misc.py:128, 152-161, kept here as ``buffer()``): a
low-quality sample only at sigma > b·sigma_min, b = sqrt(1 + 1/(s_max - 1)) (the scripts pass
s_max 4); a clean one (sigma_min 0) at every sigma. The release's EDM2 code (ImageNet) uses
sigma_n = sigma_min, i.e. ``ambient``. Not reproduced: a record with a finite sigma_min and a
sigma_max below it, which the pixel loop would train with sigma_n = sigma_max (no pixel annotator
of the release or of the paper suites writes one).
"""
from __future__ import annotations

from ambient_bench.objectives.ambient import S_MAX, buffer_factor
from ambient_bench.objectives.edm import EDMLoss
from ambient_bench.registry import register_objective


@register_objective("ambient_release")
class AmbientReleaseLoss(EDMLoss):
    """The official pixel code's loss: EDM's loss on the stored image, low-quality samples above b·sigma_min."""

    version = 1
    params = {"s_max": S_MAX}  # the release's --s_max

    # loss: EDMLoss's, on every sample (sigma_tn = 0: training_loop.py:280, 284; loss.py:30-40)

    def buffer(self) -> float:
        return buffer_factor(self.p.s_max)
