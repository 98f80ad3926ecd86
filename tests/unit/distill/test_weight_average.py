"""distill.average_samples: the moving average of the last stage's weights, kept when better."""
from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from archnet.distill.precise_bn import heldout_agreement
from archnet.distill.tasks import ImageTask
from archnet.distill.weight_average import WeightAverage, average_decay, settle_student


def test_decay_averages_about_the_last_h_samples():
    assert average_decay(32768, 64) == pytest.approx(1 - 64 / 32768)
    assert average_decay(16, 16) == 0.0 and average_decay(8, 16) == 0.0  # H <= B: the last weights
    with pytest.raises(ValueError, match="H=0"):
        average_decay(0, 64)
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(1.0)


def test_update_is_the_exponential_average_and_copies_counters():
    torch.manual_seed(0)
    states = [{"w": torch.randn(3, 2), "n": torch.tensor(k)} for k in range(5)]
    avg = WeightAverage(0.75)
    for s in states:
        avg.update(s)
    expected = states[0]["w"].clone()
    for s in states[1:]:
        expected = 0.75 * expected + 0.25 * s["w"]
    assert torch.allclose(avg.average["w"], expected, atol=1e-6)
    assert int(avg.average["n"]) == 4 and avg.updates == 5
    assert avg.average["w"] is not states[0]["w"]  # a copy, not the live tensor
    restored = WeightAverage(0.5)
    restored.load_state_dict(copy.deepcopy(avg.state_dict()))
    assert restored.decay == 0.75 and restored.updates == 5 and restored.last_step == avg.last_step
    assert torch.equal(restored.average["w"], avg.average["w"])


def test_one_update_per_optimizer_step():
    avg = WeightAverage(0.5)
    net = SimpleNamespace(student=nn.Linear(2, 2))
    module = SimpleNamespace(net=net)
    for step in (1, 1, 2, 2, 2, 3):  # accumulation: the step counter repeats
        avg.on_train_batch_end(SimpleNamespace(global_step=step), module, None, None, 0)
    assert avg.updates == 3


def _setup():
    torch.manual_seed(0)
    x = torch.randn(200, 8) * 2 + 3
    xv = torch.randn(128, 8) * 2 + 3
    labels = torch.full((200,), -1)  # never read: the task drops them
    dm = SimpleNamespace(train_set=TensorDataset(x, labels),
                         val_dataloader=lambda: DataLoader(TensorDataset(xv, labels[:128]), batch_size=50))
    teacher = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 10)).eval()
    return dm, ImageTask(lambda t: t), teacher


def _cfg(keep: str = "better", samples: int = 64):
    return OmegaConf.create({"seed": 0, "distill": {"average_samples": samples, "average_keep": keep,
                                                     "precise_bn_images": 0}})


def _noisy(teacher: nn.Module, scale: float) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    return {k: v + scale * torch.randn_like(v) for k, v in teacher.state_dict().items()}


def test_better_average_is_kept(tmp_path):
    dm, task, teacher = _setup()
    student = copy.deepcopy(teacher)
    student.load_state_dict(_noisy(teacher, 1.0))  # as trained: far from the teacher
    torch.save({"state": teacher.state_dict(), "decay": 0.9, "updates": 7}, tmp_path / "average.pt")
    records = settle_student(_cfg(), student, teacher, dm, task, tmp_path / "average.pt")
    record = records["weight_average"]
    assert record["kept"] and record["agreement_average"] == 100.0
    assert record["agreement_trained"] < 90.0 and record["updates"] == 7 and record["samples"] == 64
    assert "precise_bn" not in records
    assert all(torch.equal(v, student.state_dict()[k]) for k, v in teacher.state_dict().items())


def test_worse_average_is_discarded_unless_always(tmp_path):
    dm, task, teacher = _setup()
    student = copy.deepcopy(teacher)  # as trained: the teacher itself
    torch.save({"state": _noisy(teacher, 1.0), "decay": 0.9, "updates": 7}, tmp_path / "average.pt")
    record = settle_student(_cfg(), student, teacher, dm, task, tmp_path / "average.pt")["weight_average"]
    assert not record["kept"] and record["agreement_trained"] == 100.0
    assert all(torch.equal(v, student.state_dict()[k]) for k, v in teacher.state_dict().items())
    record = settle_student(_cfg("always"), student, teacher, dm, task, tmp_path / "average.pt")["weight_average"]
    assert record["kept"]
    assert heldout_agreement(student, teacher, task, dm.val_dataloader()) == record["agreement_average"]
    assert record["agreement_average"] < 90.0


def test_off_or_without_a_file_nothing_changes(tmp_path):
    dm, task, teacher = _setup()
    student = copy.deepcopy(teacher)
    torch.save({"state": _noisy(teacher, 1.0), "decay": 0.9, "updates": 7}, tmp_path / "average.pt")
    assert settle_student(_cfg("always", samples=0), student, teacher, dm, task, tmp_path / "average.pt") == {}
    assert settle_student(_cfg("always"), student, teacher, dm, task, tmp_path / "missing.pt") == {}
    assert all(torch.equal(v, student.state_dict()[k]) for k, v in teacher.state_dict().items())
