"""BLEU: the metric equals sacrebleu.corpus_bleu; the paper-comparable variant."""
from __future__ import annotations

import pytest
import sacrebleu

from archnet.metrics.bleu import (
    BLEUMetric,
    bleu_signature,
    corpus_bleu,
    paper_preprocess,
)

REFS = [
    "A man in an orange hat starring at something.",
    "A Boston Terrier is running on lush green grass in front of a white fence.",
    "A girl in karate uniform breaking a stick with a front kick.",
    "Five people wearing winter jackets and helmets stand in the snow, with snowmobiles in the background.",
    "People are fixing the roof of a house.",
    "A man in light colored clothing photographs a group of men wearing dark suits and hats.",
]
HYPS = [
    "A man in an orange hat looking at something.",
    "A terrier runs on green grass in front of a white fence.",
    "A girl in a karate uniform breaks a stick with a kick.",
    "Five people in winter jackets and helmets stand in the snow with snowmobiles behind them.",
    "People fix the roof of the house.",
    "a man in light clothes photographs men in dark suits and hats.",
]


def test_corpus_bleu_matches_sacrebleu() -> None:
    expected = sacrebleu.corpus_bleu(HYPS, [REFS])
    assert corpus_bleu(HYPS, REFS).score == pytest.approx(expected.score)
    lower = sacrebleu.corpus_bleu(HYPS, [REFS], lowercase=True)
    assert corpus_bleu(HYPS, REFS, lowercase=True).score == pytest.approx(lower.score)
    assert lower.score > expected.score  # the fixture's case difference is seen


@pytest.mark.parametrize("scale", [100.0, 1.0])
def test_metric_over_batches_equals_corpus_bleu(scale: float) -> None:
    expected = sacrebleu.corpus_bleu(HYPS, [REFS]).score
    metric = BLEUMetric(scale=scale)
    for i in range(0, len(HYPS), 4):  # uneven batches: the statistics add up
        metric.update(HYPS[i : i + 4], REFS[i : i + 4])
    assert float(metric.compute()) == pytest.approx(expected * scale / 100.0, rel=1e-9)
    assert 0 < float(metric.compute()) <= scale
    metric.reset()
    metric.update(REFS, REFS)
    assert float(metric.compute()) == pytest.approx(scale)


def test_paper_variant_is_lowercased_and_tokenised() -> None:
    pre = paper_preprocess(['A dog named "Rex" (brown), runs.'], "en")
    assert pre == ['a dog named " rex " ( brown ), runs.']
    expected = sacrebleu.corpus_bleu(paper_preprocess(HYPS, "en"), [paper_preprocess(REFS, "en")],
                                     tokenize="none")
    assert corpus_bleu(HYPS, REFS, mode="paper", lang="en").score == pytest.approx(expected.score)
    metric = BLEUMetric(mode="paper", lang="en")
    metric.update(HYPS, REFS)
    assert float(metric.compute()) == pytest.approx(expected.score)
    assert "tok:none" in metric.signature() and "mode:paper" in metric.signature()
    assert "tok:13a" in bleu_signature()
