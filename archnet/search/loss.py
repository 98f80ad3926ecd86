"""The label-free supernet loss (reference 7.4, step 5).

    L = lambda_f sum_{i=0}^{n-1} gamma^(n-1-i) MSE(F_s^i / a, F_T^i)
        + 1/2 [(2 - rho) KD_tau(z_T -> z_s) + rho KD_tau(z_p -> z_s)]

over the feature taps ``stem, <block>.out...`` (Arch-Net's blockwise MSE, the last block
weighted 1 and earlier ones ``gamma = 0.8`` times less per step back), ``a`` the activation
scale of the student's units (:func:`~archnet.ops.quant.activation_scale`: 0.1 for the
fixed-range quantizer, whose outputs ``clip(0.1 x, 0, 1)`` would otherwise be regressed onto
teacher features ten times larger; 1 while the supernet is float), with
``KD_tau(a -> b) = tau^2 mean_batch KL(softmax(a/tau) || softmax(b/tau))`` and ``z_p`` the
peer board path's logits on the same batch. ``rho`` is **detached** (Cream's main loss
trained the matcher through it, reference 6.3 item 2). Without a peer (warm-up, empty
board) ``rho = 0``, i.e. ``L = feature + KD(z_T -> z_s)``.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from archnet.distill.losses import kl, mse
from archnet.models.taps import LOGITS


def search_loss(s_taps: Mapping[str, Tensor], t_taps: Mapping[str, Tensor], feature_taps: Sequence[str],
                z_peer: Tensor | None = None, rho: Tensor | float = 0.0, decay: float = 0.8,
                feat_weight: float = 1.0, tau: float = 1.0,
                feature_scale: float = 1.0) -> tuple[Tensor, dict[str, float]]:
    """The loss above and its parts (floats, for logging)."""
    n = len(feature_taps)
    feat = s_taps[LOGITS].new_zeros(())
    for i, tap in enumerate(feature_taps):
        feat = feat + decay ** (n - 1 - i) * mse(s_taps[tap] / feature_scale, t_taps[tap])
    z_s = s_taps[LOGITS]
    kd_t = kl(z_s, t_taps[LOGITS], tau)
    if z_peer is None:
        r = z_s.new_zeros(())
        kd_p = z_s.new_zeros(())
    else:
        r = torch.as_tensor(rho, dtype=z_s.dtype, device=z_s.device).detach()
        kd_p = kl(z_s, z_peer.detach(), tau)
    total = feat_weight * feat + 0.5 * ((2 - r) * kd_t + r * kd_p)
    parts = {"feature": float(feat.detach()), "kd_teacher": float(kd_t.detach()),
             "kd_peer": float(kd_p.detach()), "rho": float(r)}
    return total, parts
