"""Transformer teacher -> Arch-Net student (reference section 5) and its training-only RFA.

The student is a :class:`~archnet.models.transformer.Transformer` whose slots are swapped:

* every Embedding -> :class:`OneHotEmbedding`, an FC layer on one-hot tokens
  ``e = onehot(x) q(W)^T`` (W is d x V; the pad column is zeroed, which mimics
  ``padding_idx``), then an activation quantizer. It runs as the lookup ``q(W)^T[x]``
  (identical) and, with ``export_mode``, as a MatMul on the one-hot (no Gather on the
  vocabulary);
* every LayerNorm -> :class:`MaskedBatchNorm` over the feature channel (gamma/beta copied,
  running stats 0/1) followed by an activation quantizer; batch statistics over real tokens
  only, or over all positions with ``bn_include_pad=True`` (the paper's);
* every Linear -> :class:`~archnet.ops.layers.QLinear` (weights quantized, biases float), with
  activation quantizers after Q, K, V and the output projection, and on both FFN layers
  (the first one's is the ReLU); the vocabulary projection uses ``head_weight_bits`` (8);
* dropout removed except on the attention probabilities.

In float mode (bits 32) the activation slots stay identities, except the FFN hidden
activation, which stays a ReLU. Teacher init copies every tensor whose name and shape match
(Q/K/V/O and FFN weights and biases, LN -> BN gamma/beta, the projection); embeddings are
not copied unless ``init_embedding_from_teacher`` (the authors' code leaves them random).

Residual Feature Adaptation (reference 2.2) is *not* inside the student:
:func:`build_rfa_adapters` returns a :class:`TapAdapters` module holding one
``F = L3(L2(L1(S))) + S`` per adapted tap, for the distillation stage module to own.
"""
from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor, nn

from archnet.models.transformer import Attention, FeedForward, InputStage, Transformer
from archnet.ops.layers import QLinear
from archnet.ops.quant import (
    QuantConfig,
    TensorQuantConfig,
    head_weight_config,
    make_activation,
    make_weight_quantizer,
)

EMB_KEYS = ("enc_in.emb.weight", "dec_in.emb.weight")


class OneHotEmbedding(nn.Module):
    """``e = onehot(x) W_q^T`` with ``W_q = q(W) * m`` (``m`` zero on the pad column), W: d x V.

    Integer ``x`` is looked up (``W_q^T[x]``, the same numbers) unless ``export_mode``, where
    the one-hot is built with an elementwise compare and multiplied; float ``x`` is taken as
    the one-hot itself (B x L x V).
    """

    def __init__(self, vocab_size: int, d_model: int, pad_id: int | None = None,
                 weight_quantizer: nn.Module | None = None) -> None:
        super().__init__()
        self.vocab_size, self.pad_id = vocab_size, pad_id
        self.weight = nn.Parameter(torch.empty(d_model, vocab_size))
        nn.init.normal_(self.weight, std=d_model ** -0.5)
        self.weight_quantizer = weight_quantizer if weight_quantizer is not None else nn.Identity()
        col = torch.ones(vocab_size)
        if pad_id is not None:
            col[pad_id] = 0.0
        self.register_buffer("col_mask", col, persistent=False)
        self.export_mode = False

    def quantized_weight(self) -> Tensor:
        return self.weight_quantizer(self.weight) * self.col_mask

    def forward(self, x: Tensor) -> Tensor:
        w = self.quantized_weight()
        if x.is_floating_point():
            return torch.matmul(x, w.t())
        if self.export_mode:
            vocab = torch.arange(self.vocab_size, device=x.device)
            return torch.matmul((x.unsqueeze(-1) == vocab).to(w.dtype), w.t())
        return nn.functional.embedding(x, w.t())

    def extra_repr(self) -> str:
        return f"vocab_size={self.vocab_size}, d_model={self.weight.shape[0]}, pad_id={self.pad_id}"


class MaskedBatchNorm(nn.BatchNorm1d):
    """BatchNorm over the feature axis of B x L x D tokens; ``y = (x - mu) / sqrt(var + eps)
    * gamma + beta`` per feature.

    In training, ``mu`` and the biased ``var`` are taken over the positions where ``valid``
    is True (all positions when ``include_pad`` or ``valid is None``); running statistics
    are updated as :class:`torch.nn.BatchNorm1d` does (unbiased variance, ``momentum``) from
    the same positions. In eval mode it is ``BatchNorm1d`` on the running statistics.
    """

    def __init__(self, d_model: int, eps: float = 1e-6, momentum: float | None = 0.1,
                 include_pad: bool = False) -> None:
        super().__init__(d_model, eps=eps, momentum=momentum)
        self.include_pad = include_pad

    def forward(self, x: Tensor, valid: Tensor | None = None) -> Tensor:  # type: ignore[override]
        d = x.shape[-1]
        batch_stats = self.training or not self.track_running_stats
        if not batch_stats or self.include_pad or valid is None:
            return super().forward(x.reshape(-1, d)).view_as(x)
        rows = x[valid]
        mean, var = rows.mean(0), rows.var(0, unbiased=False)
        if self.training and self.track_running_stats:
            assert self.running_mean is not None and self.running_var is not None
            assert self.num_batches_tracked is not None
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                f = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                n = rows.shape[0]
                self.running_mean.lerp_(mean.detach(), f)
                self.running_var.lerp_(var.detach() * n / max(n - 1, 1), f)
        y = (x - mean) * torch.rsqrt(var + self.eps)
        return y * self.weight + self.bias if self.affine else y

    def extra_repr(self) -> str:
        return super().extra_repr() + f", include_pad={self.include_pad}"


def _act(cfg: TensorQuantConfig) -> nn.Module:
    """Activation quantizer; identity (not ReLU) in float mode."""
    return nn.Identity() if cfg.is_float else make_activation(cfg)


def _relu_act(cfg: TensorQuantConfig) -> nn.Module:
    """The FFN hidden activation: ReLU in float, else an unsigned quantizer (its zero floor)."""
    return make_activation(replace(cfg, signed=False))


def _qlinear(lin: nn.Linear, wq: nn.Module) -> QLinear:
    return QLinear(lin.in_features, lin.out_features, bias=lin.bias is not None, weight_quantizer=wq)


def _bn(d: int, eps: float, include_pad: bool) -> MaskedBatchNorm:
    return MaskedBatchNorm(d, eps=eps, include_pad=include_pad)


def convert_transformer(teacher: Transformer, quant: QuantConfig | None = None, *,
                        bn_include_pad: bool = False, init_from_teacher: bool = True,
                        init_embedding_from_teacher: bool = False,
                        keep_other_dropout: bool = False) -> Transformer:
    """Build the Arch-Net student of ``teacher`` (rules in the module docstring).

    Args:
        teacher: the float teacher (any device; the student is built on the CPU).
        quant: weight/activation quantization (default float).
        bn_include_pad: BN statistics over padded positions too (the authors' behaviour).
        init_from_teacher: copy every same-name, same-shape tensor from the teacher.
        init_embedding_from_teacher: also copy the embeddings (transposed).
        keep_other_dropout: keep the embedding/sub-layer dropouts (the paper removes them).
    """
    quant = quant or QuantConfig()
    cfg = teacher.cfg
    wcfg, acfg = quant.weight, quant.act
    student = Transformer(replace(cfg))
    d = cfg.d_model

    def stage(s: InputStage) -> None:
        s.emb = OneHotEmbedding(cfg.vocab_size, d, cfg.pad_id, make_weight_quantizer(wcfg))
        s.emb_act, s.act = _act(acfg), _act(acfg)
        s.norm = _bn(d, cfg.ln_eps, bn_include_pad)
        if not keep_other_dropout:
            s.drop = nn.Identity()

    def attention(a: Attention) -> None:
        for name in ("w_q", "w_k", "w_v", "fc"):
            setattr(a, name, _qlinear(getattr(a, name), make_weight_quantizer(wcfg)))
        a.q_act, a.k_act, a.v_act, a.o_act, a.act = (_act(acfg) for _ in range(5))
        a.norm = _bn(d, cfg.ln_eps, bn_include_pad)
        if not keep_other_dropout:
            a.drop = nn.Identity()

    def ffn(f: FeedForward) -> None:
        f.w_1 = _qlinear(f.w_1, make_weight_quantizer(wcfg))
        f.w_2 = _qlinear(f.w_2, make_weight_quantizer(wcfg))
        f.act1, f.act2, f.act = _relu_act(acfg), _act(acfg), _act(acfg)
        f.norm = _bn(d, cfg.ln_eps, bn_include_pad)
        if not keep_other_dropout:
            f.drop = nn.Identity()

    stage(student.enc_in)
    stage(student.dec_in)
    for enc_layer in student.enc_layers:
        attention(enc_layer.mha)
        ffn(enc_layer.ffn)
    for dec_layer in student.dec_layers:
        attention(dec_layer.self_attn)
        attention(dec_layer.cross_attn)
        ffn(dec_layer.ffn)
    head_wq = make_weight_quantizer(head_weight_config(quant), role="head")
    student.prj = QLinear(d, cfg.vocab_size, bias=False, weight_quantizer=head_wq)
    if init_from_teacher:
        copy_matching(student, teacher, skip=EMB_KEYS)
        if init_embedding_from_teacher:
            state = teacher.state_dict()
            with torch.no_grad():
                for key in EMB_KEYS:
                    student.get_parameter(key).copy_(state[key].t())
    return student.train()


@torch.no_grad()
def copy_matching(dst: nn.Module, src: nn.Module, skip: tuple[str, ...] = ()) -> list[str]:
    """Copy every state-dict tensor of ``src`` whose name and shape exist in ``dst``."""
    have = src.state_dict()
    copied = []
    for key, value in dst.state_dict().items():
        if key in skip or key not in have or have[key].shape != value.shape:
            continue
        value.copy_(have[key])
        copied.append(key)
    return copied


def set_export_mode(model: nn.Module, enabled: bool = True) -> None:
    """Switch every :class:`OneHotEmbedding` between lookup and one-hot MatMul."""
    for m in model.modules():
        if isinstance(m, OneHotEmbedding):
            m.export_mode = enabled


class ResidualFeatureAdaptation(nn.Module):
    """``F = L3(L2(L1(S))) + S`` with float Linear layers (bias, no activation):
    ``L1: d -> d/r``, ``L2: d/r -> d/r``, ``L3: d/r -> d`` (``r`` = 16; reference 2.2)."""

    def __init__(self, d_model: int, squeeze: int = 16, residual: bool = True) -> None:
        super().__init__()
        h = max(1, d_model // squeeze)
        self.l1, self.l2, self.l3 = nn.Linear(d_model, h), nn.Linear(h, h), nn.Linear(h, d_model)
        self.residual = residual

    def forward(self, s: Tensor) -> Tensor:
        f = self.l3(self.l2(self.l1(s)))
        return f + s if self.residual else f


RFA_SUFFIXES = (".in", ".mha", ".self_mha", ".cross_mha", ".ffn")


def rfa_taps(tap_names: list[str]) -> list[str]:
    """Taps that get an adapter: both input stages and every MHA and FFN sub-layer output."""
    return [t for t in tap_names if t.endswith(RFA_SUFFIXES)]


class TapAdapters(nn.ModuleDict):
    """Adapters keyed by tap name (``.`` is stored as ``__``); taps without one pass through."""

    @staticmethod
    def key(tap: str) -> str:
        return tap.replace(".", "__")

    def has(self, tap: str) -> bool:
        return self.key(tap) in self

    def adapt(self, tap: str, x: Tensor) -> Tensor:
        return self[self.key(tap)](x) if self.has(tap) else x

    def forward(self, taps: dict[str, Tensor]) -> dict[str, Tensor]:  # type: ignore[override]
        return {name: self.adapt(name, t) for name, t in taps.items()}


def build_rfa_adapters(tap_names: list[str], d_model: int, squeeze: int = 16,
                       residual: bool = True, taps: list[str] | None = None) -> TapAdapters:
    """One :class:`ResidualFeatureAdaptation` per tap of ``taps`` (default :func:`rfa_taps`)."""
    chosen = rfa_taps(tap_names) if taps is None else taps
    return TapAdapters({TapAdapters.key(t): ResidualFeatureAdaptation(d_model, squeeze, residual)
                        for t in chosen})
