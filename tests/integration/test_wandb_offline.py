"""``logger=wandb`` runs offline: one offline run directory per experiment whose history
holds both stages' metrics at global steps, read back from the ``.wandb`` transaction log."""
from __future__ import annotations

import ipaddress
import json
import socket
import struct
import zlib
from pathlib import Path

import pytest

BLOCK, HEADER = 32768, 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: Path):
    """The protobuf records of a ``.wandb`` file (a LevelDB-style log: 32 KiB blocks of
    ``crc32(type + data) | length | type | data`` chunks after a ``:W&B`` header)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    ident, magic, version = struct.unpack("<4sHB", data[:HEADER])
    assert (ident, magic, version) == (b":W&B", 0xBEE1, 0)
    pos, pending = HEADER, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # block trailer
            pos += left
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        if kind == 0 and length == 0:  # zero padding to the end of the block
            pos += left
            continue
        chunk = data[pos + HEADER:pos + HEADER + length]
        assert len(chunk) == length and zlib.crc32(bytes([kind]) + chunk) == crc, pos
        pos += HEADER + length
        if kind in (FULL, LAST):
            record = pb.Record()
            record.ParseFromString((pending if kind == LAST else b"") + chunk)
            pending = b""
            yield record
        elif kind in (FIRST, MIDDLE):
            pending = (pending if kind == MIDDLE else b"") + chunk
        else:
            raise AssertionError(f"unknown chunk type {kind} at {pos}")


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


def history(records) -> dict[int, dict[str, float]]:
    rows: dict[int, dict[str, float]] = {}
    for r in records:
        if r.WhichOneof("record_type") == "history":
            row = {_key(i): json.loads(i.value_json) for i in r.history.item}
            rows.setdefault(int(row["_step"]), {}).update(row)
    return rows


def summary(records) -> dict[str, float]:
    out: dict[str, float] = {}
    for r in records:
        if r.WhichOneof("record_type") == "summary":
            out.update({_key(i): json.loads(i.value_json) for i in r.summary.update})
    return out


@pytest.fixture
def no_network(monkeypatch):
    """Fail on any connection from this process that is not local; aim W&B at a dead port."""
    attempts: list = []
    real_connect = socket.socket.connect

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            host = address[0]
            try:
                local = ipaddress.ip_address(host).is_loopback
            except ValueError:
                local = host == "localhost"
            if not local:
                attempts.append(address)
                raise OSError(f"test: network access to {address} is not allowed")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", _local_only(socket.getaddrinfo, attempts))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    return attempts


def _local_only(real, attempts):
    def getaddrinfo(host, *args, **kwargs):
        if host not in (None, "localhost", "127.0.0.1", "::1", ""):
            attempts.append(host)
            raise OSError(f"test: name lookup of {host} is not allowed")
        return real(host, *args, **kwargs)
    return getaddrinfo


def test_wandb_offline_history_has_both_stages(root, h, no_network):
    run_dir = root / "outputs" / "wandb_run"
    metrics = h.distill(run_dir, [*h.SMOKE, "logger=wandb"])
    assert no_network == []
    runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, runs
    assert not [p for p in (run_dir / "wandb").glob("run-*") if p.is_dir()]  # nothing online
    run_id = (run_dir / "wandb_id.txt").read_text().strip()
    assert runs[0].name.endswith(f"-{run_id}")
    logs = list(runs[0].glob("*.wandb"))
    assert [p.name for p in logs] == [f"run-{run_id}.wandb"]

    records = list(read_records(logs[0]))
    rows = history(records)
    assert sorted(rows) == list(range(1, 9))  # global steps: 4 per stage
    keys = set().union(*rows.values())
    for stage in ("00_stem", "01_logits"):
        for key in ("train/loss", "train/lr", "val/loss", "val/agreement"):
            assert f"{stage}/{key}" in keys, (stage, key)
    assert {k for k in keys if k.startswith("00_stem/")} >= {"00_stem/train/mse/stem"}
    assert "01_logits/train/cosine/logits" in keys
    # stage 1 logs steps 1-4, stage 2 steps 5-8; values equal metrics.json's curves
    for stage, steps in (("00_stem", range(1, 5)), ("01_logits", range(5, 9))):
        logged = {s: r[f"{stage}/train/loss"] for s, r in rows.items() if f"{stage}/train/loss" in r}
        assert sorted(logged) == list(steps)
        assert [[s, logged[s]] for s in steps] == metrics["stages"][stage]["curve"]
        last = rows[steps[-1]]
        assert last[f"{stage}/val/loss"] == metrics["stages"][stage]["val/loss"]
        assert last[f"{stage}/val/agreement"] == metrics["stages"][stage]["val/agreement"]
    final = summary(records)
    for who in ("teacher", "student"):
        assert final[f"{who}/test/top1"] == metrics[who]["test/top1"]
        assert final[f"{who}/params"] == metrics[who]["params"]
