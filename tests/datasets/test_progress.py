"""Progress: bars on a terminal, one line per epoch in a log, never a flood of nested bars."""

from __future__ import annotations

import io

import pytest

from shiftkit.datasets.progress import progress_bar, progress_mode


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_mode_follows_the_stream_and_the_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHIFTKIT_PROGRESS", raising=False)
    assert progress_mode(_Tty()) == "bars"
    assert progress_mode(io.StringIO()) == "lines"
    monkeypatch.setenv("SHIFTKIT_PROGRESS", "off")
    assert progress_mode(_Tty()) == "off"


def test_log_gets_one_line_per_epoch_and_nothing_per_step(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHIFTKIT_PROGRESS", raising=False)
    log = io.StringIO()
    epochs = progress_bar(range(1, 4), desc="DANN epoch", total=4, initial=1, lines=True, stream=log)
    for e in epochs:
        for _ in progress_bar(range(50), desc=f"epoch {e}", stream=log):  # inner: silent in a log
            pass
        epochs.set_postfix(train_loss=f"{1 / e:.4f}")
    lines = log.getvalue().splitlines()
    assert [ln.split(" (")[0] for ln in lines] == [
        "DANN epoch 2/4: train_loss=1.0000", "DANN epoch 3/4: train_loss=0.5000", "DANN epoch 4/4: train_loss=0.3333"]
    tty = _Tty()
    for _ in progress_bar(range(3), desc="x", lines=True, stream=tty, enabled=False):
        pass
    assert tty.getvalue() == ""  # disabled shows nothing anywhere


def test_trainer_writes_one_line_per_epoch_to_a_log(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    from shiftkit.adapt.methods import SourceOnly
    from shiftkit.adapt.models.backbones import build_mlp
    from shiftkit.adapt.training.data import ArrayDataset

    monkeypatch.delenv("SHIFTKIT_PROGRESS", raising=False)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 4)).astype("f4")
    SourceOnly(build_mlp(4, [8], 2), epochs=3, batch_size=8, progress=True).fit(ArrayDataset(x, (x[:, 0] > 0).astype(int)))
    err = capsys.readouterr().err
    rows = [ln for ln in err.splitlines() if ln.strip()]
    assert len(rows) == 3 and all(r.startswith("SourceOnly epoch ") for r in rows), err
    assert "train_loss=" in rows[-1] and "\r" not in err
