"""The Transformer progressive schedule (reference 3.3), derived from the layer counts,
and its token-level losses.

Tap groups (names of :class:`~archnet.models.transformer.Transformer`)::

    enc_out = [enc.in, enc.0.mha, enc.0.ffn, ...]            (2 n_enc + 1)
    dec_out = [dec.in, dec.0.self_mha, dec.0.cross_mha, dec.0.ffn, ...]   (3 n_dec + 1)
    enc_attn = [enc.i.attn_map], dec_self = [dec.i.self_map], dec_cross = [dec.i.cross_map]
    enc_emb = [enc.emb], dec_emb = [dec.emb]

A supervised prefix ``g[0:m]`` of a group is weighted ``decay^(m-1-i)`` (newest 1), each
group on its own. Periods (``N = n_enc``, ``M = n_dec``; 6+6 gives 14 + 1 = 15)::

    0            mse enc_out[0:1]                     cos enc_emb
    k = 1..N     mse enc_out[0:2k+1]                  cos enc_attn[0:k], enc_emb
    N+1          mse enc_out, dec_out[0:1]            cos enc_attn, enc_emb, dec_emb
    N+1+j, j=1..M  mse enc_out, dec_out[0:3j+1]       cos enc_attn, enc_emb, dec_emb,
                                                          dec_self[0:j], dec_cross[0:j]
    final        everything above + ``ce`` on ``logits`` (label-smoothed CE vs the
                 teacher's argmax tokens)

Loss kinds: ``mse`` (:func:`token_mse`), ``cosine`` (:func:`token_cosine`), ``ce``
(:func:`teacher_ce`); :func:`period_loss` evaluates a period on tapped tensors.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from archnet.convert.transformer import TapAdapters

LOSS_KINDS = ("mse", "cosine", "ce")


@dataclass(frozen=True)
class Period:
    """One distillation period: ``terms[tap] = (loss_kind, weight)``."""

    name: str
    terms: dict[str, tuple[str, float]]

    def deepest(self, tap_names: list[str]) -> int:
        """Index of the deepest supervised tap: the ``upto`` for ``forward_taps``."""
        return max(tap_names.index(t) for t in self.terms)

    def as_terms(self) -> list[tuple[str, str, float]]:
        """``[(tap, loss_kind, weight), ...]``."""
        return [(t, k, w) for t, (k, w) in self.terms.items()]


def tap_groups(n_enc: int, n_dec: int) -> dict[str, list[str]]:
    enc_out = ["enc.in"] + [f"enc.{i}.{s}" for i in range(n_enc) for s in ("mha", "ffn")]
    dec_out = ["dec.in"] + [f"dec.{i}.{s}" for i in range(n_dec)
                            for s in ("self_mha", "cross_mha", "ffn")]
    return {"enc_out": enc_out, "dec_out": dec_out, "enc_emb": ["enc.emb"], "dec_emb": ["dec.emb"],
            "enc_attn": [f"enc.{i}.attn_map" for i in range(n_enc)],
            "dec_self": [f"dec.{i}.self_map" for i in range(n_dec)],
            "dec_cross": [f"dec.{i}.cross_map" for i in range(n_dec)]}


def _decayed(taps: list[str], kind: str, decay: float) -> dict[str, tuple[str, float]]:
    m = len(taps)
    return {t: (kind, decay ** (m - 1 - i)) for i, t in enumerate(taps)}


def transformer_periods(n_enc: int = 6, n_dec: int = 6, decay: float = 0.8,
                        ce_weight: float = 1.0) -> list[Period]:
    """The periods of the paper's schedule for any layer counts (module docstring)."""
    g = tap_groups(n_enc, n_dec)
    periods: list[Period] = []

    def add(name: str, mse: list[list[str]], cos: list[list[str]]) -> None:
        terms: dict[str, tuple[str, float]] = {}
        for group in mse:
            terms.update(_decayed(group, "mse", decay))
        for group in cos:
            terms.update(_decayed(group, "cosine", decay))
        periods.append(Period(f"{len(periods):02d}_{name}", terms))

    add("enc_in", [g["enc_out"][:1]], [g["enc_emb"]])
    for k in range(1, n_enc + 1):
        add(f"enc_{k - 1}", [g["enc_out"][: 2 * k + 1]], [g["enc_attn"][:k], g["enc_emb"]])
    add("dec_in", [g["enc_out"], g["dec_out"][:1]], [g["enc_attn"], g["enc_emb"], g["dec_emb"]])
    for j in range(1, n_dec + 1):
        add(f"dec_{j - 1}", [g["enc_out"], g["dec_out"][: 3 * j + 1]],
            [g["enc_attn"], g["enc_emb"], g["dec_emb"], g["dec_self"][:j], g["dec_cross"][:j]])
    final = dict(periods[-1].terms)
    final["logits"] = ("ce", ce_weight)
    periods.append(Period(f"{len(periods):02d}_final", final))
    return periods


def _masked_mean(x: Tensor, valid: Tensor | None) -> Tensor:
    """Mean of ``x`` (B x L x ...) over positions where ``valid`` (B x L) is True."""
    if valid is None:
        return x.mean()
    v = valid.reshape(valid.shape + (1,) * (x.dim() - valid.dim())).to(x.dtype)
    return (x * v).sum() / (v.sum() * x[0, 0].numel()).clamp_min(1)


def token_mse(s: Tensor, t: Tensor, valid: Tensor | None = None) -> Tensor:
    """``mean (s - t)^2`` over the elements of real positions (all when ``valid`` is None)."""
    return _masked_mean((s - t).square(), valid)


def token_cosine(s: Tensor, t: Tensor, valid: Tensor | None = None, dim: int = -1) -> Tensor:
    """``1 - mean cos(s, t)`` along ``dim``.

    ``dim=-1``: per position over features (B x L x D) or per query over keys (attention maps
    B x H x Lq x Lk, ``valid`` over the queries); averaged over real positions. ``dim=1`` is
    the authors' axis (sequence, or heads for maps), averaged over everything, pads included.
    """
    cos = F.cosine_similarity(s, t, dim=dim)
    if dim != -1 or valid is None:
        return 1.0 - cos.mean()
    if cos.dim() == 3:  # B x H x Lq from maps: mask the queries
        cos = cos.transpose(1, 2)
    return 1.0 - _masked_mean(cos, valid)


def teacher_ce(student_logits: Tensor, teacher_logits: Tensor, valid: Tensor | None = None,
               smoothing: float = 0.1, reduction: str = "mean") -> Tensor:
    """Label-smoothed CE against the teacher's argmax ``y``: ``-sum_c p_c log softmax(z)_c``
    with ``p_y = 1 - eps`` and ``p_c = eps / (V - 1)`` otherwise; ``mean`` or ``sum`` over the
    real positions (the authors: ``sum``)."""
    target = teacher_logits.argmax(-1)
    logp = F.log_softmax(student_logits, dim=-1)
    v = logp.shape[-1]
    nll = -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    other = -(logp.sum(-1)) - nll
    loss = (1.0 - smoothing) * nll + smoothing / (v - 1) * other
    if valid is not None:
        loss = loss[valid]
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.mean()
    raise ValueError(f"ce_reduction={reduction!r}: one of mean, sum")


def period_loss(period: Period, student: dict[str, Tensor], teacher: dict[str, Tensor],
                src: Tensor, tgt_in: Tensor, pad_id: int, adapters: TapAdapters | None = None,
                mask_pads: bool = True, cos_dim: int = -1, smoothing: float = 0.1,
                ce_reduction: str = "mean", ce_mask: str = "gold",
                tgt_out: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """``sum_tap weight * loss(adapt(s_tap), t_tap)``; returns the total and each term.

    Args:
        adapters: a :class:`~archnet.convert.transformer.TapAdapters` (RFA) or None.
        mask_pads: exclude padded positions from ``mse``/``cosine`` (the authors include them).
        cos_dim: ``-1`` (features) or ``1`` (the authors' axis).
        ce_mask: ``gold`` (real next tokens ``tgt_out``) or ``teacher_pred`` (positions the
            teacher does not predict pad, the authors').
    """
    src_valid, tgt_valid = src != pad_id, tgt_in != pad_id
    parts: dict[str, Tensor] = {}
    total = torch.zeros((), device=src.device)
    for tap, (kind, weight) in period.terms.items():
        s, t = student[tap], teacher[tap]
        if adapters is not None:
            s = adapters.adapt(tap, s)
        valid = (src_valid if tap.startswith("enc.") else tgt_valid) if mask_pads else None
        if kind == "mse":
            loss = token_mse(s, t, valid)
        elif kind == "cosine":
            loss = token_cosine(s, t, valid, cos_dim)
        elif kind == "ce":
            if ce_mask == "teacher_pred":
                ce_valid = t.argmax(-1) != pad_id
            elif ce_mask == "gold":
                ce_valid = (tgt_out if tgt_out is not None else tgt_in) != pad_id
            else:
                raise ValueError(f"ce_mask={ce_mask!r}: one of gold, teacher_pred")
            loss = teacher_ce(s, t, ce_valid, smoothing, ce_reduction)
        else:
            raise ValueError(f"loss kind {kind!r}: one of {', '.join(LOSS_KINDS)}")
        parts[tap] = loss
        total = total + weight * loss
    return total, parts
