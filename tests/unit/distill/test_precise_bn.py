"""distill.precise_bn_images: population BN statistics after the last stage, kept when better."""
from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from archnet.distill.precise_bn import apply_precise_bn, heldout_agreement, population_statistics
from archnet.distill.tasks import ImageTask


class ModeSpy(nn.Module):
    """Identity that records the training flag of every forward."""

    def __init__(self) -> None:
        super().__init__()
        self.modes: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.modes.append(self.training)
        return x


def test_population_statistics_are_the_batch_average():
    torch.manual_seed(0)
    spy, bn = ModeSpy(), nn.BatchNorm1d(4)
    model = nn.Sequential(spy, bn).train()
    b1, b2 = torch.randn(10, 4) * 3 + 1, torch.randn(10, 4) * 0.5 - 2
    assert population_statistics(model, [(b1,), (b2,)]) == 20
    mean = (b1.mean(0) + b2.mean(0)) / 2
    var = (b1.var(0, unbiased=True) + b2.var(0, unbiased=True)) / 2
    assert torch.allclose(bn.running_mean, mean, atol=1e-6)
    assert torch.allclose(bn.running_var, var, atol=1e-5)
    assert int(bn.num_batches_tracked) == 2 and bn.momentum == 0.1
    assert spy.modes == [False, False] and not model.training and not bn.training


def _setup(n_train: int = 200):
    torch.manual_seed(0)
    x = torch.randn(n_train, 8) * 2 + 3
    xv = torch.randn(128, 8) * 2 + 3
    labels = torch.full((n_train,), -1)  # never read: the task drops them
    dm = SimpleNamespace(train_set=TensorDataset(x, labels),
                         val_dataloader=lambda: DataLoader(TensorDataset(xv, labels[:128]), batch_size=50))
    task = ImageTask(lambda t: t)
    teacher = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 10))
    population_statistics(teacher, [(x,)])  # one batch: the whole pool
    return dm, task, teacher.eval()


def _cfg(n: int, keep: str = "better"):
    return OmegaConf.create({"seed": 0, "distill": {"precise_bn_images": n, "precise_bn_keep": keep,
                                                     "val_samples": 1}})  # not what decides


def test_corrupted_statistics_are_replaced_and_kept():
    dm, task, teacher = _setup()
    student = copy.deepcopy(teacher)
    with torch.no_grad():
        student[1].running_mean += 3.0
        student[1].running_var *= 4.0
    out = apply_precise_bn(_cfg(200), student, teacher, dm, task)
    assert out["images"] == 200 and out["kept"]
    assert out["agreement_before"] < 90.0 and out["agreement_after"] == 100.0
    same = out["agreement_before"] * 128 / 100  # judged on all 128 held-out samples
    assert same == pytest.approx(round(same), abs=1e-9) and 0 < same < 128
    assert torch.allclose(student[1].running_mean, teacher[1].running_mean, atol=1e-5)
    assert heldout_agreement(student, teacher, task, dm.val_dataloader(), 100) == 100.0


def test_no_gain_keeps_the_old_statistics_unless_always():
    dm, task, teacher = _setup()
    student = copy.deepcopy(teacher)
    before = copy.deepcopy(student.state_dict())
    out = apply_precise_bn(_cfg(40), student, teacher, dm, task)  # 40 images: other statistics
    assert out["agreement_before"] == 100.0 and not out["kept"]
    assert all(torch.equal(v, student.state_dict()[k]) for k, v in before.items())
    out = apply_precise_bn(_cfg(40, "always"), student, teacher, dm, task)
    assert out["kept"] and not torch.equal(student[1].running_mean, before["1.running_mean"])


def test_off_and_without_batchnorm_it_does_nothing():
    dm, task, teacher = _setup()
    assert apply_precise_bn(_cfg(0), copy.deepcopy(teacher), teacher, dm, task) is None
    plain = nn.Sequential(nn.Linear(8, 10))
    assert apply_precise_bn(_cfg(64), plain, teacher, dm, task) is None


def test_heldout_agreement_cuts_the_last_batch():
    dm, task, teacher = _setup()
    student = copy.deepcopy(teacher)
    with torch.no_grad():
        student[3].bias.copy_(torch.tensor([1e6] + [0.0] * 9))  # always class 0
    with torch.no_grad():
        xv = torch.cat([b[0] for b in dm.val_dataloader()])[:70]
        expected = 100.0 * float((teacher(xv).argmax(1) == 0).float().mean())
    assert heldout_agreement(student, teacher, task, dm.val_dataloader(), 70) == pytest.approx(expected)
