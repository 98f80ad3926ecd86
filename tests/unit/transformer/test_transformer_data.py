"""Multi30k data: vocabulary and tokenizers round trip, batching, the data module."""
from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest
import torch

from archnet.data import multi30k
from archnet.data.multi30k import (
    Multi30kDataModule,
    PadCollate,
    TokenBatchSampler,
    default_data_dir,
)
from archnet.data.tokenize import BpeTokenizer, WordTokenizer, load_tokenizer
from archnet.data.vocab import BOS_ID, EOS_ID, PAD_ID, SPECIALS, UNK_ID, Vocab
from archnet.decode.translate import translate
from archnet.errors import ConfigError
from archnet.models.transformer import Transformer, TransformerConfig

EN = ["A man is riding a red bike.", "Two dogs play in the snow, near a man.",
      "A man and a dog.", "The dogs are running."]
DE = ["Ein Mann fährt ein rotes Fahrrad.", "Zwei Hunde spielen im Schnee, neben einem Mann.",
      "Ein Mann und ein Hund.", "Die Hunde rennen."]


def test_vocab_order_and_round_trip(tmp_path: Path) -> None:
    vocab = Vocab.build([["a", "b", "a", "c"], ["b", "a"]], [["x", "a", "x"]], min_freq=2)
    assert vocab.itos == [*SPECIALS, "a", "b", "x"]  # source by frequency, then new target words
    assert (vocab.stoi["<unk>"], vocab.stoi["<blank>"], vocab.stoi["<s>"], vocab.stoi["</s>"]) == (
        UNK_ID, PAD_ID, BOS_ID, EOS_ID)
    assert vocab.decode(vocab.encode(["a", "x", "zzz"])) == ["a", "x", "<unk>"]
    vocab.save(tmp_path / "v.json")
    assert Vocab.load(tmp_path / "v.json").itos == vocab.itos


def test_word_tokenizer_round_trip(tmp_path: Path) -> None:
    tok = WordTokenizer.train(EN, DE, "en", "de", min_freq=2)
    assert {"man", "a", "dogs", "."} <= set(tok.vocab.itos) and "riding" not in tok.vocab.stoi
    assert tok.tokens(["A dog's toy, (red)."], "en") == [["a", "dog", "'s", "toy", ",", "(", "red", ")", "."]]
    ids = tok.encode(["A man, a dog."], "en")[0]
    # "," occurs once per side: min_freq counts each side on its own (as the authors' script)
    assert tok.vocab.decode(ids) == ["a", "man", "<unk>", "a", "<unk>", "."]
    assert tok.decode([BOS_ID, *ids, EOS_ID, PAD_ID], "en") == "a man <unk> a <unk>."
    tok.save(tmp_path)
    again = load_tokenizer(tmp_path)
    assert isinstance(again, WordTokenizer) and again.vocab.itos == tok.vocab.itos
    assert again.encode(EN, "en") == tok.encode(EN, "en")


def test_bpe_tokenizer_round_trip(tmp_path: Path) -> None:
    tok = BpeTokenizer.train(EN + DE, vocab_size=300)
    for text, lang in ((EN[1], "en"), (DE[0], "de"), ("Ölgemälde über Straße ß!", "de")):
        ids = tok.encode([text], lang)[0]
        assert min(ids) > EOS_ID  # no specials, no <unk> (byte fallback)
        assert tok.decode([BOS_ID, *ids, EOS_ID, PAD_ID], lang) == text
    tok.save(tmp_path)
    again = load_tokenizer(tmp_path)
    assert again.encode(DE, "de") == tok.encode(DE, "de") and again.vocab_size == tok.vocab_size


def test_token_batch_sampler() -> None:
    lengths = [3, 9, 4, 4, 12, 1, 7, 7, 2, 5]
    sampler = TokenBatchSampler(lengths, max_tokens=16, shuffle=True, seed=1)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(10))
    assert all(len(b) * max(lengths[i] for i in b) <= 16 or len(b) == 1 for b in batches)
    assert len(sampler) == len(batches)
    sampler.set_epoch(1)
    assert list(sampler) != batches or len(batches) == 1
    ranks = [list(TokenBatchSampler(lengths, 16, seed=1, num_replicas=2, rank=r)) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) and not {i for b in ranks[0] for i in b} & {i for b in ranks[1] for i in b}
    fixed = list(TokenBatchSampler(lengths, max_sentences=3, shuffle=False))
    assert [len(b) for b in fixed] == [3, 3, 3, 1]
    src, tgt = PadCollate(PAD_ID)([(torch.tensor([2, 5, 3]), torch.tensor([2, 3])),
                                   (torch.tensor([2, 3]), torch.tensor([2, 6, 7, 3]))])
    assert src.tolist() == [[2, 5, 3], [2, 3, PAD_ID]] and tgt.shape == (2, 4)


def test_download_offline_is_one_line_config_error(tmp_path: Path, monkeypatch) -> None:
    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(multi30k.urllib.request, "urlopen", offline)
    with pytest.raises(ConfigError, match="cannot fetch") as err:
        multi30k.download(tmp_path)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="train.en.gz"):
        multi30k.read_lines(tmp_path, "train", "en")
    with pytest.raises(ConfigError):
        Multi30kDataModule(tmp_path, direction="en-fr")


needs_data = pytest.mark.skipif(default_data_dir() is None, reason="Multi30k raw files not present")


@needs_data
@pytest.mark.parametrize("kind", ["bpe", "word"])
def test_datamodule_subset(kind: str, tmp_path: Path) -> None:
    dm = Multi30kDataModule(direction="de-en", tokenizer=kind, max_tokens=400, subset=1000,
                            holdout=50, vocab_dir=tmp_path, bpe_vocab_size=1000)
    dm.setup()
    assert len(dm.split("train")) == 950 and len(dm.split("holdout")) == 50
    assert len(dm.references("test_2016_flickr")) == 1000
    assert dm.references("test_2016_flickr")[0] == "A man in an orange hat starring at something."
    src, tgt = next(iter(dm.train_dataloader()))
    assert src.dtype == torch.long and src.shape[0] == tgt.shape[0]
    assert src.numel() <= 400 or src.shape[0] == 1
    assert (tgt[:, 0] == BOS_ID).all() and ((tgt == EOS_ID).sum(1) == 1).all()
    assert int(src.max()) < dm.vocab_size and dm.pad_id == PAD_ID
    first = dm.split("val")[0][1].tolist()
    text = dm.detokenize(first)
    assert text == dm.references("val")[0] if kind == "bpe" else text.islower()
    idx, batch = next(iter(dm.translation_batches("test_2016_flickr", max_tokens=300)))
    assert batch.shape[0] == len(idx)
    model = Transformer(TransformerConfig(dm.vocab_size, dm.pad_id, d_model=16, d_inner=16,
                                          n_enc=1, n_dec=1, n_head=2))
    hyps = translate(model, dm, "val", beam=2, max_len=4,
                     max_tokens=4000)
    assert len(hyps) == len(dm.references("val")) and all(isinstance(h, str) for h in hyps)
    again = Multi30kDataModule(direction="de-en", tokenizer=kind, subset=1000, holdout=50,
                               vocab_dir=tmp_path, bpe_vocab_size=1000)
    again.setup()  # loads the saved tokenizer
    assert again.split("train")[0][0].tolist() == dm.split("train")[0][0].tolist()
    with pytest.raises(ConfigError, match="vocab_dir"):
        Multi30kDataModule(direction="de-en", tokenizer=kind, subset=999, holdout=50,
                           vocab_dir=tmp_path, bpe_vocab_size=1000).setup()
