"""Post-LN encoder-decoder Transformer teacher with taps and cached incremental decoding.

The architecture of "Attention Is All You Need" as in the authors' teacher (reference
section 5): sinusoidal positions added to the embedding, dropout, then a LayerNorm (the
*input stage*); each sub-layer is ``y = Norm(x + Drop(Sub(x)))`` with
``MHA(x) = fc(softmax(Q K^T / sqrt(d_k) + mask) V)`` (masked logits -1e9) and
``FFN(x) = w2(relu(w1 x))``; the decoder ends in a bias-free projection to the vocabulary.

Every place the Arch-Net student changes is a named slot, so :mod:`archnet.convert.transformer`
swaps modules and both share this forward, the taps and the decoding code:

* ``emb`` (Embedding) and ``emb_act``; ``norm`` modules take ``(x, valid)`` so a masked
  BatchNorm can skip pads (:class:`TokenLayerNorm` ignores ``valid``);
* after Q/K/V/output projections ``q_act``, ``k_act``, ``v_act``, ``o_act``; after each norm
  ``act``; in the FFN ``act1`` (the ReLU) and ``act2``; identity in the teacher.

Tap names (encoder taps precede decoder taps; ``i`` is the layer index)::

    enc.emb, enc.in, enc.i.attn_map, enc.i.mha, enc.i.ffn,
    dec.emb, dec.in, dec.i.self_map, dec.i.self_mha, dec.i.cross_map, dec.i.cross_mha,
    dec.i.ffn, logits

``*.emb`` is the embedding output (before positions), ``*.in`` the input stage, ``*_map``
the attention probabilities after attention dropout (B x H x Lq x Lk), the others are
sub-layer outputs (B x L x d). ``forward_taps`` stops after the deepest tap asked for.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import cast

import torch
from torch import Tensor, nn

LOGITS = "logits"
NEG_INF = -1e9


@dataclass
class TransformerConfig:
    """Sizes of the teacher; defaults are the paper's (512/512/6+6/8, dropout 0.1)."""

    vocab_size: int
    pad_id: int = 1
    d_model: int = 512
    d_inner: int = 512
    n_enc: int = 6
    n_dec: int = 6
    n_head: int = 8
    dropout: float = 0.1
    n_position: int = 200
    ln_eps: float = 1e-6
    attn_bias: bool = False
    emb_init_std: float | None = None   # None: Xavier (authors); else N(0, std^2) embeddings

    @property
    def d_k(self) -> int:
        return self.d_model // self.n_head


def sinusoid_table(n_position: int, d: int) -> Tensor:
    """``P[p, 2i] = sin(p / 10000^(2i/d))``, ``P[p, 2i+1] = cos(p / 10000^(2i/d))``."""
    pos = torch.arange(n_position, dtype=torch.float64)[:, None]
    expo = (2 * (torch.arange(d) // 2)).to(torch.float64) / d
    angle = pos / torch.pow(10000.0, expo)[None, :]
    table = torch.where(torch.arange(d) % 2 == 0, torch.sin(angle), torch.cos(angle))
    return table.to(torch.float32)


class TokenLayerNorm(nn.LayerNorm):
    """LayerNorm over features taking the ``(x, valid)`` norm signature (``valid`` unused)."""

    def forward(self, x: Tensor, valid: Tensor | None = None) -> Tensor:  # type: ignore[override]
        return super().forward(x)


class _Stop(Exception):
    """Raised by :class:`_Taps` once the deepest requested tap is recorded."""


class _Taps:
    def __init__(self, names: list[str], last: int) -> None:
        self.names, self.last = names, last
        self.out: dict[str, Tensor] = {}

    def __call__(self, name: str, t: Tensor) -> None:
        if name != self.names[len(self.out)]:
            raise RuntimeError(f"tap {name!r} out of order (expected {self.names[len(self.out)]!r})")
        self.out[name] = t
        if len(self.out) > self.last:
            raise _Stop


def _tap(taps: _Taps | None, name: str, t: Tensor) -> None:
    if taps is not None:
        taps(name, t)


class InputStage(nn.Module):
    """``act(norm(drop(emb_act(emb(ids)) + P[offset:offset+L])))``; taps ``emb`` and ``in``."""

    pos: Tensor

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.emb: nn.Module = nn.Embedding(cfg.vocab_size, cfg.d_model, padding_idx=cfg.pad_id)
        self.emb_act: nn.Module = nn.Identity()
        self.register_buffer("pos", sinusoid_table(cfg.n_position, cfg.d_model), persistent=False)
        self.drop: nn.Module = nn.Dropout(cfg.dropout)
        self.norm: nn.Module = TokenLayerNorm(cfg.d_model, eps=cfg.ln_eps)
        self.act: nn.Module = nn.Identity()

    def forward(self, ids: Tensor, valid: Tensor | None, prefix: str, taps: _Taps | None,
                offset: int = 0) -> Tensor:
        if offset + ids.shape[1] > self.pos.shape[0]:
            raise ValueError(f"sequence of {offset + ids.shape[1]} tokens > n_position "
                             f"{self.pos.shape[0]}")
        e = self.emb_act(self.emb(ids))
        _tap(taps, f"{prefix}.emb", e)
        h = self.drop(e + self.pos[offset: offset + ids.shape[1]])
        h = self.act(self.norm(h, valid))
        _tap(taps, f"{prefix}.in", h)
        return h


class Attention(nn.Module):
    """Multi-head attention sub-layer ``act(norm(x + drop(o_act(fc(ctx)))))``."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        d, b = cfg.d_model, cfg.attn_bias
        self.n_head, self.d_k = cfg.n_head, cfg.d_k
        self.w_q, self.w_k, self.w_v = nn.Linear(d, d, b), nn.Linear(d, d, b), nn.Linear(d, d, b)
        self.fc = nn.Linear(d, d, b)
        self.q_act: nn.Module = nn.Identity()
        self.k_act: nn.Module = nn.Identity()
        self.v_act: nn.Module = nn.Identity()
        self.o_act: nn.Module = nn.Identity()
        self.attn_drop: nn.Module = nn.Dropout(cfg.dropout)
        self.drop: nn.Module = nn.Dropout(cfg.dropout)
        self.norm: nn.Module = TokenLayerNorm(d, eps=cfg.ln_eps)
        self.act: nn.Module = nn.Identity()

    def _heads(self, x: Tensor) -> Tensor:
        return x.view(x.shape[0], x.shape[1], self.n_head, self.d_k).transpose(1, 2)

    def keys_values(self, kv: Tensor) -> tuple[Tensor, Tensor]:
        """Projected keys and values, B x H x L x d_k each."""
        return self._heads(self.k_act(self.w_k(kv))), self._heads(self.v_act(self.w_v(kv)))

    def forward(self, x: Tensor, k: Tensor, v: Tensor, mask: Tensor | None,
                valid: Tensor | None) -> tuple[Tensor, Tensor]:
        """Returns the sub-layer output and the attention map (B x H x Lq x Lk)."""
        q = self._heads(self.q_act(self.w_q(x)))
        scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(self.d_k)
        if mask is not None:
            scores = scores.masked_fill(~mask, NEG_INF)
        attn = self.attn_drop(torch.softmax(scores, dim=-1))
        ctx = torch.matmul(attn, v).transpose(1, 2).reshape(x.shape[0], x.shape[1], -1)
        out = self.drop(self.o_act(self.fc(ctx)))
        return self.act(self.norm(x + out, valid)), attn


class FeedForward(nn.Module):
    """``act(norm(x + drop(act2(w2(act1(w1 x))))))`` with ``act1`` = ReLU in the teacher."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.w_1, self.w_2 = nn.Linear(cfg.d_model, cfg.d_inner), nn.Linear(cfg.d_inner, cfg.d_model)
        self.act1: nn.Module = nn.ReLU()
        self.act2: nn.Module = nn.Identity()
        self.drop: nn.Module = nn.Dropout(cfg.dropout)
        self.norm: nn.Module = TokenLayerNorm(cfg.d_model, eps=cfg.ln_eps)
        self.act: nn.Module = nn.Identity()

    def forward(self, x: Tensor, valid: Tensor | None) -> Tensor:
        h = self.drop(self.act2(self.w_2(self.act1(self.w_1(x)))))
        return self.act(self.norm(x + h, valid))


class EncoderLayer(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.mha, self.ffn = Attention(cfg), FeedForward(cfg)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.self_attn, self.cross_attn, self.ffn = Attention(cfg), Attention(cfg), FeedForward(cfg)


@dataclass
class DecoderCache:
    """State of incremental decoding: encoder memory mask, per-layer self-attention keys and
    values of all previous positions, cross-attention keys and values, tokens decoded so far."""

    src_mask: Tensor
    cross_k: list[Tensor]
    cross_v: list[Tensor]
    self_k: list[Tensor | None] = field(default_factory=list)
    self_v: list[Tensor | None] = field(default_factory=list)
    length: int = 0

    def reorder(self, index: Tensor) -> None:
        """Keep rows ``index`` of the batch (beam search), in that order."""
        self.src_mask = self.src_mask.index_select(0, index)
        for lst in (self.cross_k, self.cross_v, self.self_k, self.self_v):
            for i, t in enumerate(lst):
                if t is not None:
                    lst[i] = t.index_select(0, index)


class Transformer(nn.Module):
    """Encoder-decoder with the tap contract and the decode interface of
    :mod:`archnet.decode.beam` (``encode``, ``init_cache``, ``decode_step``)."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.enc_in = InputStage(cfg)
        self.enc = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.n_enc))
        self.dec_in = InputStage(cfg)
        self.dec = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.n_dec))
        self.prj: nn.Module = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self._init_weights()

    def _init_weights(self) -> None:
        """Xavier-uniform for every matrix (the authors'); with ``emb_init_std`` the token
        embeddings are N(0, std^2) instead (std 1: comparable to the sinusoid positions,
        whose entries have RMS 0.71, so the token survives the input LayerNorm at init)."""
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        with torch.no_grad():
            for stage in (self.enc_in, self.dec_in):
                weight = cast(Tensor, stage.emb.weight)
                if self.cfg.emb_init_std is not None:
                    nn.init.normal_(weight, 0.0, self.cfg.emb_init_std)
                weight[self.cfg.pad_id].zero_()

    @property
    def enc_layers(self) -> list[EncoderLayer]:
        return [cast(EncoderLayer, m) for m in self.enc]

    @property
    def dec_layers(self) -> list[DecoderLayer]:
        return [cast(DecoderLayer, m) for m in self.dec]

    @property
    def tap_names(self) -> list[str]:
        names = ["enc.emb", "enc.in"]
        for i in range(self.cfg.n_enc):
            names += [f"enc.{i}.attn_map", f"enc.{i}.mha", f"enc.{i}.ffn"]
        names += ["dec.emb", "dec.in"]
        for i in range(self.cfg.n_dec):
            names += [f"dec.{i}.{s}" for s in ("self_map", "self_mha", "cross_map", "cross_mha", "ffn")]
        return names + [LOGITS]

    def tap_index(self, name: str) -> int:
        return self.tap_names.index(name)

    # -- masks ---------------------------------------------------------------------------
    def src_mask(self, src: Tensor) -> Tensor:
        """B x 1 x 1 x S, True where the key is a real token."""
        return (src != self.cfg.pad_id)[:, None, None, :]

    def tgt_mask(self, tgt: Tensor) -> Tensor:
        """B x 1 x T x T: real key tokens at or before the query position."""
        t = tgt.shape[1]
        causal = torch.ones(t, t, dtype=torch.bool, device=tgt.device).tril()
        return (tgt != self.cfg.pad_id)[:, None, None, :] & causal

    # -- full forward --------------------------------------------------------------------
    def _encode(self, src: Tensor, taps: _Taps | None) -> Tensor:
        valid = src != self.cfg.pad_id
        mask = self.src_mask(src)
        h = self.enc_in(src, valid, "enc", taps)
        for i, layer in enumerate(self.enc_layers):
            h, attn = layer.mha(h, *layer.mha.keys_values(h), mask, valid)
            _tap(taps, f"enc.{i}.attn_map", attn)
            _tap(taps, f"enc.{i}.mha", h)
            h = layer.ffn(h, valid)
            _tap(taps, f"enc.{i}.ffn", h)
        return h

    def _decode(self, tgt_in: Tensor, memory: Tensor, src_mask: Tensor, taps: _Taps | None) -> Tensor:
        valid = tgt_in != self.cfg.pad_id
        mask = self.tgt_mask(tgt_in)
        h = self.dec_in(tgt_in, valid, "dec", taps)
        for i, layer in enumerate(self.dec_layers):
            h, attn = layer.self_attn(h, *layer.self_attn.keys_values(h), mask, valid)
            _tap(taps, f"dec.{i}.self_map", attn)
            _tap(taps, f"dec.{i}.self_mha", h)
            h, attn = layer.cross_attn(h, *layer.cross_attn.keys_values(memory), src_mask, valid)
            _tap(taps, f"dec.{i}.cross_map", attn)
            _tap(taps, f"dec.{i}.cross_mha", h)
            h = layer.ffn(h, valid)
            _tap(taps, f"dec.{i}.ffn", h)
        logits = self.prj(h)
        _tap(taps, LOGITS, logits)
        return logits

    def forward_taps(self, src: Tensor, tgt_in: Tensor, upto: int | str | None = None
                     ) -> dict[str, Tensor]:
        """Ordered ``{tap: tensor}`` for taps ``0..upto`` (index or name; default all)."""
        names = self.tap_names
        last = len(names) - 1 if upto is None else upto if isinstance(upto, int) else names.index(upto)
        if not 0 <= last < len(names):
            raise IndexError(f"tap index {last} outside 0..{len(names) - 1}")
        taps = _Taps(names, last)
        try:
            memory = self._encode(src, taps)
            self._decode(tgt_in, memory, self.src_mask(src), taps)
        except _Stop:
            pass
        return taps.out

    def forward(self, src: Tensor, tgt_in: Tensor) -> Tensor:
        """Teacher-forced logits, B x T x V."""
        return self._decode(tgt_in, self._encode(src, None), self.src_mask(src), None)

    # -- incremental decoding ------------------------------------------------------------
    def encode(self, src: Tensor) -> tuple[Tensor, Tensor]:
        """Encoder memory (B x S x d) and source key mask (B x 1 x 1 x S)."""
        return self._encode(src, None), self.src_mask(src)

    def init_cache(self, memory: Tensor, src_mask: Tensor) -> DecoderCache:
        """Cross-attention keys/values computed once per sentence."""
        kvs = [layer.cross_attn.keys_values(memory) for layer in self.dec_layers]
        n = len(self.dec)
        return DecoderCache(src_mask, [k for k, _ in kvs], [v for _, v in kvs], [None] * n, [None] * n)

    def decode_step(self, tokens: Tensor, cache: DecoderCache) -> Tensor:
        """Logits (B x V) of the next token after feeding ``tokens`` (B,) at position
        ``cache.length``; appends this position's self-attention keys/values to ``cache``.
        Equal to the last row of :meth:`forward` in eval mode (norms must not use batch
        statistics)."""
        h = self.dec_in(tokens[:, None], None, "dec", None, offset=cache.length)
        for i, layer in enumerate(self.dec_layers):
            k, v = layer.self_attn.keys_values(h)
            old_k, old_v = cache.self_k[i], cache.self_v[i]
            if old_k is not None and old_v is not None:
                k, v = torch.cat([old_k, k], 2), torch.cat([old_v, v], 2)
            cache.self_k[i], cache.self_v[i] = k, v
            h, _ = layer.self_attn(h, k, v, None, None)
            h, _ = layer.cross_attn(h, cache.cross_k[i], cache.cross_v[i], cache.src_mask, None)
            h = layer.ffn(h, None)
        cache.length += 1
        return self.prj(h)[:, 0]

    def decode_full(self, tgt_in: Tensor, memory: Tensor, src_mask: Tensor) -> Tensor:
        """Logits (B x T x V) for a whole prefix, without a cache."""
        return self._decode(tgt_in, memory, src_mask, None)
