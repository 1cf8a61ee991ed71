"""Non-leaky geometric augmentation with augmentation labels (our own implementation).

Following EDM (Karras et al. 2022, augmentation regularisation, after ADA), each transform is applied to
each image independently with probability min(1, p * weight), and its parameters are returned as a
conditioning vector, so a denoiser conditioned on all-zero labels learns the un-augmented distribution.
EDM's CIFAR-10 recipe: ``AugmentPipe(p=0.12, xflip=1e8, yflip=1, scale=1, rotate_frac=1, aniso=1,
translate_frac=1)`` (p=0.15 at 64 px).

Label layout (LABEL_DIM = 9; every entry is 0 when its transform was not applied, so all-zero labels
<=> identity, and exactly those images are returned bit-identical):

    0  xflip                 1 if mirrored left-right (exact index flip), else 0
    1  yflip                 1 if mirrored top-bottom (exact index flip), else 0
    2  log2 s                isotropic scale s = 2^(N(0,1) * scale_std)
    3  sin(a)                rotation a = U[-pi, pi)  (a uniform fraction of a full turn)
    4  cos(a) - 1
    5  log2 k * cos(2 th)    anisotropic scale k = 2^(N(0,1) * aniso_std) along direction th ~ U[0, pi),
    6  log2 k * sin(2 th)      1/k across it (2 th: th and th + pi are the same axis)
    7  tx                    translation, N(0, translate_std), as a fraction of the image width
    8  ty                    likewise, as a fraction of the image height

Geometry is in pixel units about the image centre with x to the right and y down; the forward map is
x -> A R S x + t (scale, then rotation, then anisotropy, then translation), so positive tx moves content
right. Flips come first and are exact; the other four are composed into one affine matrix per image and
resampled once (bilinear, reflection padding, align_corners=False), only for images that need it.

Randomness: every parameter is drawn for every image on every call, whatever p is (so p=0 still advances
the generator, by an amount independent of the coin outcomes). Pass a CPU generator: parameters are drawn
on the generator's device and then moved to the images' device, so CPU and CUDA runs agree.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LABEL_DIM = 9


def _rot(a: torch.Tensor) -> torch.Tensor:
    """Batch of 2x2 rotation matrices (x right, y down)."""
    c, s = torch.cos(a), torch.sin(a)
    return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)


class AugmentPipe:
    """``images, labels = AugmentPipe(p)(images, generator)``; see the module docstring."""

    def __init__(self, p: float, xflip: float = 1.0, yflip: float = 1.0, scale: float = 1.0,
                 rotate_frac: float = 1.0, aniso: float = 1.0, translate_frac: float = 1.0,
                 scale_std: float = 0.2, aniso_std: float = 0.2, translate_std: float = 0.125) -> None:
        self.p = float(p)
        self.xflip, self.yflip, self.scale = float(xflip), float(yflip), float(scale)
        self.rotate_frac, self.aniso, self.translate_frac = float(rotate_frac), float(aniso), float(translate_frac)
        self.scale_std, self.aniso_std, self.translate_std = float(scale_std), float(aniso_std), float(translate_std)

    def _coin(self, u: torch.Tensor, weight: float) -> torch.Tensor:
        # u in [0, 1): probability 0 never fires, probability 1 always does.
        return u < min(1.0, max(0.0, self.p * weight))

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        n, _, h, w = images.shape
        kw = dict(generator=generator, device=generator.device, dtype=torch.float64)
        # Fixed draw shapes keep the generator stream independent of which coins come up.
        u = torch.rand(6, n, **kw).cpu()
        z = torch.randn(4, n, **kw).cpu()
        r = torch.rand(2, n, **kw).cpu()
        zero = torch.zeros(n, dtype=torch.float64)

        xf = self._coin(u[0], self.xflip)
        yf = self._coin(u[1], self.yflip)
        log_s = torch.where(self._coin(u[2], self.scale), z[0] * self.scale_std, zero)
        angle = torch.where(self._coin(u[3], self.rotate_frac), (2 * r[0] - 1) * math.pi, zero)
        log_k = torch.where(self._coin(u[4], self.aniso), z[1] * self.aniso_std, zero)
        theta = r[1] * math.pi
        do_t = self._coin(u[5], self.translate_frac)
        tx = torch.where(do_t, z[2] * self.translate_std, zero)
        ty = torch.where(do_t, z[3] * self.translate_std, zero)

        labels = torch.stack([xf.double(), yf.double(), log_s, torch.sin(angle), torch.cos(angle) - 1,
                              log_k * torch.cos(2 * theta), log_k * torch.sin(2 * theta), tx, ty], dim=1)

        out = images.clone()
        xf_d, yf_d = xf.to(images.device), yf.to(images.device)
        # Index flips rather than resampling, so a flip-only image is exact.
        if bool(xf.any()):
            out[xf_d] = out[xf_d].flip(-1)
        if bool(yf.any()):
            out[yf_d] = out[yf_d].flip(-2)

        # Resample exactly the images with a non-zero geometric label (grid_sample is not exact at identity).
        need = labels[:, 2:].ne(0).any(dim=1)
        if bool(need.any()):
            idx = need.nonzero().squeeze(1)
            s = torch.exp2(log_s[idx]).view(-1, 1, 1)
            k = torch.exp2(log_k[idx])
            aniso = _rot(theta[idx]) @ torch.diag_embed(torch.stack([k, 1 / k], -1)) @ _rot(-theta[idx])
            fwd = aniso @ _rot(angle[idx]) @ (s * torch.eye(2, dtype=torch.float64))
            t_pix = torch.stack([tx[idx] * w, ty[idx] * h], -1).unsqueeze(-1)
            # grid_sample wants output -> input: x_in = M^-1 (x_out - t), rewritten in normalised coords
            # where pixel = D * normalised, D = diag(w/2, h/2) (align_corners=False: +-1 are the image edges).
            d = torch.diag(torch.tensor([w / 2, h / 2], dtype=torch.float64))
            d_inv = torch.linalg.inv(d)
            inv = torch.linalg.inv(fwd)
            theta_mat = torch.cat([d_inv @ inv @ d, -(d_inv @ inv @ t_pix)], dim=-1)

            work = images.dtype if images.dtype in (torch.float32, torch.float64) else torch.float32
            sub = out[idx.to(images.device)].to(work)
            grid = F.affine_grid(theta_mat.to(device=images.device, dtype=work), list(sub.shape), align_corners=False)
            res = F.grid_sample(sub, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
            out[idx.to(images.device)] = res.to(images.dtype)

        return out, labels.to(device=images.device, dtype=torch.float32)
