"""Sequence decoding: batched beam search and greedy search (:mod:`archnet.decode.beam`),
and whole-split translation (:mod:`archnet.decode.translate`)."""
from archnet.decode.beam import beam_search, greedy_decode, length_normalized
from archnet.decode.translate import translate

__all__ = ["beam_search", "greedy_decode", "length_normalized", "translate"]
