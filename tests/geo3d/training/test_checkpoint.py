"""Checkpoints: exact round trip and resume, clear errors for truncated / corrupt / mismatched files,
atomic writes."""

from __future__ import annotations

import struct
import zipfile

import pytest
import torch

from geo3d.training.checkpoint import CheckpointError, load_checkpoint, restore, save_checkpoint

# tiny models: one torch thread is as fast as two and does not stall beside other jobs
pytestmark = pytest.mark.usefixtures("one_torch_thread")




def _setup(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    return model, optimizer, scheduler


def _step(model, optimizer, scheduler, seed):
    generator = torch.Generator().manual_seed(seed)
    x, y = torch.randn(16, 4, generator=generator), torch.randint(0, 2, (16,), generator=generator)
    loss = torch.nn.functional.cross_entropy(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    scheduler.step()


def test_round_trip_and_resume_continue_exactly(tmp_path):
    model, optimizer, scheduler = _setup()
    for step in range(3):
        _step(model, optimizer, scheduler, step)
    path = save_checkpoint(tmp_path / "run" / "last.pt", model, epoch=3, optimizer=optimizer,
                           scheduler=scheduler, config={"lr": 0.01, "name": "x"},
                           metrics={"history": [{"acc": 0.5}]}, extra={"k": [1, 2]})
    checkpoint = load_checkpoint(path)
    assert checkpoint.epoch == 3 and checkpoint.config == {"lr": 0.01, "name": "x"}
    assert checkpoint.metrics["history"][0]["acc"] == 0.5 and checkpoint.extra == {"k": [1, 2]}
    for key, value in model.state_dict().items():
        assert torch.equal(checkpoint.model[key], value)

    fresh, fresh_opt, fresh_sched = _setup(seed=1)  # different initial weights
    assert restore(checkpoint, fresh, fresh_opt, fresh_sched) == 3
    for step in range(3, 6):  # both continue with the same batches
        _step(model, optimizer, scheduler, step)
        _step(fresh, fresh_opt, fresh_sched, step)
    for a, b in zip(model.state_dict().values(), fresh.state_dict().values()):
        assert torch.equal(a, b)
    assert fresh_opt.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"] == 0.01 * 0.5**3


def test_truncated_corrupt_and_foreign_files_are_reported(tmp_path):
    model, optimizer, scheduler = _setup()
    path = save_checkpoint(tmp_path / "ok.pt", model, epoch=1, optimizer=optimizer)
    data = path.read_bytes()

    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated.pt: not a checkpoint, or truncated"):
        load_checkpoint(truncated)

    # flip one byte inside the weights: torch.load alone would load wrong weights silently
    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if "/data/" in i.filename and i.file_size > 16)
    name_length, extra_length = struct.unpack_from("<HH", data, info.header_offset + 26)  # local header
    corrupt = bytearray(data)
    corrupt[info.header_offset + 30 + name_length + extra_length + 8] ^= 0xFF
    (tmp_path / "corrupt.pt").write_bytes(bytes(corrupt))
    with pytest.raises(CheckpointError, match="corrupt checkpoint.*CRC"):
        load_checkpoint(tmp_path / "corrupt.pt")

    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        load_checkpoint(tmp_path / "text.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="not a geo3d checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="missing.pt: checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_mismatched_model_and_missing_optimizer_state(tmp_path):
    model, _, _ = _setup()
    checkpoint = load_checkpoint(save_checkpoint(tmp_path / "m.pt", model, epoch=0))
    other = torch.nn.Sequential(torch.nn.Linear(4, 9), torch.nn.BatchNorm1d(9), torch.nn.Linear(9, 2))
    message = r"does not fit the model.*shape mismatch.*0.weight \(8, 4\) vs \(9, 4\)"
    with pytest.raises(CheckpointError, match=message):
        restore(checkpoint, other)
    with pytest.raises(CheckpointError, match="holds no optimizer state"):
        restore(checkpoint, model, torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(ValueError, match="plain JSON"):
        save_checkpoint(tmp_path / "bad.pt", model, epoch=0, config={"x": object()})


def test_writes_are_atomic(tmp_path, monkeypatch):
    model, _, _ = _setup()
    path = save_checkpoint(tmp_path / "last.pt", model, epoch=1)
    before = path.read_bytes()

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", fail)  # the final rename of the atomic write fails
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model, epoch=2)
    assert path.read_bytes() == before  # the old checkpoint is intact...
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # ...and no partial file is left
    assert load_checkpoint(path).epoch == 1
