"""Every CNN family converts, trains one step with adapters, and never touches a label.

ResNet-18/34/50 and MobileNetV1/V2 at 64 px with small widths: the student builds, the
teacher-attention + RFA adapters attach to every feature tap, and one final-stage step of
:class:`StageModule` (all taps + logits) runs under a Lightning ``Trainer``. The data set's
labels are objects that raise on any use; they must never leave
:class:`~archnet.data.sampling.ImagesOnly`.
"""
from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from archnet.convert.chain_student import chain_student
from archnet.convert.mobilenet import convert_mobilenet
from archnet.convert.resnet import convert_resnet
from archnet.data.folder_module import BatchFlipCrop
from archnet.data.sampling import ImagesOnly, StageBatchSampler
from archnet.distill.adapters import rfa_adapters
from archnet.distill.build import freeze
from archnet.distill.mixup import BatchMixup, Chain
from archnet.distill.schedule import progressive
from archnet.distill.stage_module import DistillNet, StageModule
from archnet.distill.trainable import select_trainable
from archnet.models import mobilenet, resnet
from archnet.ops.quant import QuantConfig, TensorQuantConfig

SHAPE = (3, 64, 64)
W2A4 = QuantConfig("w2a4", TensorQuantConfig("dorefa", 2), TensorQuantConfig("fixed", 4), logit_clip=16.0)
FAMILIES = {
    "resnet18": lambda: resnet.resnet18(10, width_multiplier=0.125),
    "resnet34": lambda: resnet.resnet34(10, width_multiplier=0.125),
    "resnet50": lambda: resnet.resnet50(10, width_multiplier=0.125),
    "mobilenet_v1": lambda: mobilenet.mobilenet_v1(10, width_mult=0.25),
    "mobilenet_v2": lambda: mobilenet.mobilenet_v2(10, width_mult=0.25),
}


class PoisonLabel:
    """A label that raises on any use: comparison, indexing, numbers, arrays, tensors, hashing."""

    def _used(self, *args, **kwargs):
        raise AssertionError("a label was used during label-free distillation")

    __index__ = __int__ = __float__ = __bool__ = __hash__ = __len__ = __iter__ = _used
    __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = __add__ = __radd__ = _used
    __array__ = __getitem__ = __torch_function__ = __reduce__ = __reduce_ex__ = _used

    def __getattr__(self, name: str):
        raise AssertionError(f"a label was used during label-free distillation (.{name})")

    def __repr__(self) -> str:
        return "PoisonLabel()"


class PoisonedImages(Dataset):
    """``(uint8 image, PoisonLabel())`` pairs."""

    def __init__(self, n: int = 8) -> None:
        rng = np.random.default_rng(0)
        self.images = torch.from_numpy(rng.integers(0, 256, (n, *SHAPE), dtype=np.uint8))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i], PoisonLabel()


def test_poison_label_raises_on_use():
    label = PoisonedImages()[0][1]
    for use in (lambda: label == 1, lambda: int(label), lambda: [0, 1][label], lambda: torch.tensor(label),
                lambda: np.asarray(label, dtype=np.int64), lambda: torch.as_tensor([label]), lambda: hash(label),
                lambda: label.item()):
        with pytest.raises((AssertionError, TypeError, RuntimeError, ValueError)):
            use()


def build_student(name: str, teacher, quant: QuantConfig):
    if name.startswith("resnet"):
        return convert_resnet(teacher, quant, SHAPE)
    return convert_mobilenet(teacher, quant, SHAPE, depthwise=name == "mobilenet_v2")


@pytest.mark.parametrize("name", list(FAMILIES))
def test_family_trains_one_label_free_step_with_adapters(name, tmp_path):
    torch.manual_seed(0)
    teacher = freeze(FAMILIES[name]())
    quant = W2A4 if name == "resnet18" else QuantConfig()
    student = build_student(name, teacher, quant)
    assert student.tap_names == teacher.tap_names
    adapters = rfa_adapters(teacher, student, SHAPE)
    assert len(adapters) == len(teacher.tap_names) - 2  # every feature tap but the stem
    net = DistillNet(student, adapters)
    stage = progressive(teacher.tap_names, 1, 1, 8)[-1]
    stage.optimizer = {"_target_": "torch.optim.Adam", "lr": 1e-3}
    data = ImagesOnly(PoisonedImages())
    loader = DataLoader(data, batch_sampler=StageBatchSampler(len(data), 1, 1, 4, seed=0, stage=0))
    augment = Chain([BatchFlipCrop(4, True, 0, 0), BatchMixup(1.0, 1.0, 0, 0)])
    module = StageModule(net, teacher, stage, lambda x: x.float() / 255 - 0.5, 4, teacher.tap_names,
                         augment=augment)
    select_trainable(module, (next(iter(loader)).float() / 255 - 0.5,))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    bn_before = [m.running_mean.clone() for m in teacher.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    trainer = pl.Trainer(accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=str(tmp_path))
    trainer.fit(module, loader)
    assert trainer.global_step == 1
    after = net.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("adapters."))
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("student."))
    bn_after = [m.running_mean for m in teacher.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(torch.equal(a, b) for a, b in zip(bn_before, bn_after))  # frozen teacher


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v1"])
def test_chain_student_trains_on_the_taps_both_share(name, tmp_path):
    """student=chain: taps stem, <block>.out, logits; the stage supervises the shared ones."""
    torch.manual_seed(0)
    teacher = freeze(FAMILIES[name]())
    student = chain_student(teacher, QuantConfig(), SHAPE)
    shared = [t for t in teacher.tap_names if t in set(student.tap_names)]
    assert shared == student.tap_names and len(shared) < len(teacher.tap_names)
    adapters = rfa_adapters(teacher, student, SHAPE)
    assert list(adapters) == shared[1:-1]
    stage = progressive(shared, 1, 1, 8)[-1]
    stage.optimizer = {"_target_": "torch.optim.Adam", "lr": 1e-3}
    module = StageModule(DistillNet(student, adapters), teacher, stage, lambda x: x.float() / 255,
                         4, shared)
    data = ImagesOnly(PoisonedImages(4))
    loader = DataLoader(data, batch_sampler=StageBatchSampler(len(data), 1, 1, 4, seed=0, stage=0))
    select_trainable(module, (next(iter(loader)).float() / 255,))
    trainer = pl.Trainer(accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=str(tmp_path))
    trainer.fit(module, loader)
    assert trainer.global_step == 1


def test_without_images_only_the_labels_would_raise():
    with pytest.raises((AssertionError, TypeError)):
        next(iter(DataLoader(PoisonedImages(4), batch_size=2)))
