"""Label-free translation targets: the teacher's beam-search output for every training source.

With ``data.targets=teacher`` the student is teacher-forced on the teacher's own
translations instead of the human ones, so no human translation reaches distillation. The
translations are computed once and cached as ``<cache_dir>/<key>.pt``; the key hashes the
teacher checkpoint's bytes, the source ids and the decoding settings, so a new teacher,
tokenizer, subset or beam gives a new file and an unchanged setting reuses it.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from torch import Tensor

from archnet.data.multi30k import PairDataset
from archnet.errors import ConfigError
from archnet.metrics.translation import decode_sources
from archnet.utils.io import save_json, save_torch, sha256_file


def cache_key(checkpoint: str | Path, sources: list[Tensor], decode: dict[str, Any]) -> str:
    """sha256 of (teacher checkpoint bytes, source ids, decode settings), 16 hex digits."""
    h = hashlib.sha256()
    h.update(sha256_file(checkpoint).encode())
    for s in sources:
        h.update(s.numpy().tobytes())
        h.update(b"|")
    h.update(json.dumps(decode, sort_keys=True).encode())
    return h.hexdigest()[:16]


def load_frozen_teacher(model_cfg: Any, checkpoint: str | Path) -> torch.nn.Module:
    """The teacher of ``model_cfg`` with ``checkpoint`` loaded, in eval mode."""
    from archnet.distill.build import freeze, load_teacher_checkpoint

    model = instantiate(model_cfg)
    load_teacher_checkpoint(model, checkpoint)
    return freeze(model)


def teacher_targets(dm: Any, model_cfg: Any, checkpoint: str | Path | None, cache_dir: str | Path,
                    beam: int = 5, max_len: int = 100, alpha: float = 0.7, max_tokens: int = 4096,
                    device: str | None = "auto") -> PairDataset:
    """``(src, <s> teacher translation </s>)`` for every pair of ``dm.train_set``, cached."""
    if not checkpoint or not Path(checkpoint).is_file():
        raise ConfigError("teacher.checkpoint", checkpoint,
                          "an existing teacher checkpoint (data.targets=teacher decodes with it)")
    sources = list(dm.train_set.src)
    decode = {"beam": beam, "max_len": max_len, "alpha": alpha, "direction": dm.direction}
    key = cache_key(checkpoint, sources, decode)
    path = Path(cache_dir) / f"{key}.pt"
    if path.is_file():
        targets = torch.load(path, map_location="cpu")["targets"]
    else:
        teacher = load_frozen_teacher(model_cfg, checkpoint)
        tok = dm.tokenizer
        print(f"teacher targets: translating {len(sources)} training sources with the teacher "
              f"(beam {beam}), once; cached as {path}", flush=True)
        start = time.perf_counter()
        ids = decode_sources(teacher, sources, tok, beam, max_len, alpha, max_tokens, device=device)
        targets = [torch.tensor([tok.bos_id, *h, tok.eos_id], dtype=torch.long) for h in ids]
        seconds = time.perf_counter() - start
        save_torch({"targets": targets, "decode": decode}, path)
        save_json({"checkpoint": str(checkpoint), "pairs": len(targets), **decode,
                   "decode_s": seconds}, path.with_suffix(".json"))
        print(f"teacher targets: done in {seconds / 60:.1f} min", flush=True)
    if len(targets) != len(sources):
        raise RuntimeError(f"{path}: {len(targets)} targets for {len(sources)} sources")
    return PairDataset(sources, targets)
