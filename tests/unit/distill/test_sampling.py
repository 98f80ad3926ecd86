"""The deterministic, resumable stage sampler (archnet.data.sampling)."""
from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from archnet.data.sampling import ImagesOnly, StageBatchSampler

N, TOTAL, CHUNK, BATCH = 37, 23, 5, 4


def all_batches(sampler: StageBatchSampler) -> list[list[int]]:
    """Every batch of the stage, chunk by chunk, as Lightning iterates it."""
    out = []
    n_chunks = -(-sampler.total // sampler.chunk)
    for epoch in range(n_chunks):
        sampler.set_epoch(epoch)
        chunk = list(sampler)
        assert len(chunk) == len(sampler)
        out += chunk
    return out


def make(seed: int = 0, stage: int = 0, rank: int = 0, world: int = 1, **kw) -> StageBatchSampler:
    args = dict(n_items=N, total_steps=TOTAL, steps_per_chunk=CHUNK, batch_size=BATCH)
    args.update(kw)
    return StageBatchSampler(**args, seed=seed, stage=stage, rank=rank, world_size=world)


def test_budget_chunks_and_batch_sizes():
    s = make()
    lengths = []
    for epoch in range(5):
        s.set_epoch(epoch)
        lengths.append(len(s))
    assert lengths == [5, 5, 5, 5, 3] and sum(lengths) == TOTAL
    s.set_epoch(5)
    assert len(s) == 0 and list(s) == []
    batches = all_batches(make())
    assert len(batches) == TOTAL and all(len(b) == BATCH for b in batches)
    assert all(0 <= i < N for b in batches for i in b)


def test_stream_is_concatenated_permutations():
    flat = [i for b in all_batches(make()) for i in b]
    for c in range(len(flat) // N):
        assert sorted(flat[c * N:(c + 1) * N]) == list(range(N))  # every image once per cycle
    tail = flat[(len(flat) // N) * N:]
    assert len(set(tail)) == len(tail)


def test_deterministic_by_seed_and_stage():
    a = all_batches(make(seed=3, stage=1))
    assert a == all_batches(make(seed=3, stage=1))
    assert a != all_batches(make(seed=4, stage=1))
    assert a != all_batches(make(seed=3, stage=2))
    first = [i for b in all_batches(make(seed=3, stage=1)) for i in b][:N]
    assert first != list(range(N))  # shuffled


@pytest.mark.parametrize("resume_epoch", [1, 2, 4])
def test_resume_at_a_chunk_boundary_replays_the_same_batches(resume_epoch):
    full = all_batches(make(seed=7))
    # a fresh process: a new sampler whose epoch is restored from the checkpoint
    resumed = make(seed=7)
    replay = []
    for epoch in range(resume_epoch, -(-TOTAL // CHUNK)):
        resumed.set_epoch(epoch)
        replay += list(resumed)
    assert replay == full[resume_epoch * CHUNK:]


def test_resume_after_iterating_later_cycles_first():
    """The permutation cache must not depend on what was iterated before."""
    s = make(seed=1, total_steps=40)
    s.set_epoch(7)
    late = list(s)
    s.set_epoch(0)
    early = list(s)
    fresh = make(seed=1, total_steps=40)
    assert list(fresh) == early
    fresh.set_epoch(7)
    assert list(fresh) == late


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_are_disjoint_and_cover_the_global_batch(world):
    single = [i for b in all_batches(make(seed=5, batch_size=BATCH * world)) for i in b]
    per_rank = [all_batches(make(seed=5, rank=r, world=world)) for r in range(world)]
    assert all(len(b) == TOTAL for b in per_rank)
    for step in range(TOTAL):
        parts = [per_rank[r][step] for r in range(world)]
        union = [i for p in parts for i in p]
        gb = BATCH * world
        # rank r takes its slice of the global stream: together exactly the global batch
        assert union == single[step * gb:(step + 1) * gb]
        positions = [set(range(step * gb + r * BATCH, step * gb + (r + 1) * BATCH))
                     for r in range(world)]
        assert all(not (positions[a] & positions[b]) for a in range(world)
                   for b in range(a + 1, world))
    # within one cycle (N >= global batch), no image is seen by two ranks in the same step
    for step in range(TOTAL):
        parts = [set(per_rank[r][step]) for r in range(world)]
        if (step * BATCH * world) // N == ((step + 1) * BATCH * world - 1) // N:
            assert sum(len(p) for p in parts) == len(set().union(*parts))


@pytest.mark.parametrize("resume_step", [0, 3, 5, 22])
def test_step_driven_sampler_resumes_at_any_step(resume_step):
    """With ``step_fn`` each pass starts at the trainer's step and runs to its chunk's end."""
    full = all_batches(make(seed=9))
    step = [resume_step]
    s = make(seed=9, step_fn=lambda: step[0])
    replay = []
    while step[0] < TOTAL:
        chunk = list(s)
        assert chunk, step[0]
        assert len(chunk) <= CHUNK and (step[0] + len(chunk)) % CHUNK in (0, TOTAL % CHUNK)
        for batch in chunk:
            replay.append(batch)
            step[0] += 1  # one optimizer step per batch
    assert replay == full[resume_step:]
    assert list(s) == [] and len(s) == 0


class _Record(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.seen: list[list[int]] = []

    def training_step(self, batch, batch_idx):
        self.seen.append(batch[:, 0, 0, 0].tolist())
        return (self.w - 1.0) ** 2

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_lightning_draws_a_new_chunk_every_epoch(tmp_path):
    """Regression: Lightning never calls ``set_epoch`` on a batch sampler, so an epoch-driven
    sampler replayed chunk 0 forever; the trainer must see the whole stream."""
    images = torch.arange(N).view(N, 1, 1, 1).expand(N, 3, 2, 2).to(torch.uint8)
    view = ImagesOnly(TensorDataset(images, torch.zeros(N)))
    trainer = pl.Trainer(max_steps=TOTAL, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path, accelerator="cpu", devices=1)
    sampler = make(seed=11, step_fn=lambda: trainer.global_step)
    module = _Record()
    trainer.fit(module, DataLoader(view, batch_sampler=sampler))
    assert trainer.global_step == TOTAL
    assert module.seen == all_batches(make(seed=11))


def test_with_a_dataloader_and_images_only():
    images = torch.arange(N).view(N, 1, 1, 1).expand(N, 3, 2, 2).to(torch.uint8)
    ds = TensorDataset(images, torch.full((N,), 99))
    view = ImagesOnly(ds)
    assert len(view) == N and torch.equal(view[5], images[5])
    sampler = make(seed=2)
    loader = DataLoader(view, batch_sampler=sampler)
    sampler.set_epoch(1)
    got = [b[:, 0, 0, 0].tolist() for b in loader]
    assert got == all_batches(make(seed=2))[CHUNK:2 * CHUNK]
    assert all(isinstance(b, torch.Tensor) and b.dtype == torch.uint8 for b in loader)
