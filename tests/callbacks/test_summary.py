# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from torchgeo_scalemae.callbacks import ReconstructionSummary


def _trainer(tmp_path: Path, metrics: dict[str, float]) -> Any:
    return SimpleNamespace(
        callback_metrics={k: torch.tensor(v) for k, v in metrics.items()},
        global_step=150,
        log_dir=str(tmp_path),
        is_global_zero=True,
        loggers=[object()],
    )


def test_summary_reports_each_band_against_its_baseline(tmp_path: Path) -> None:
    summary = ReconstructionSummary()
    trainer = _trainer(
        tmp_path,
        {
            'train_psnr_low_epoch': 17.0,
            'train_psnr_low_baseline_epoch': 15.5,
            'train_psnr_high_epoch': 18.6,
            'train_psnr_high_baseline_epoch': 18.6,
        },
    )
    summary.on_train_end(trainer, None)  # type: ignore[arg-type]
    assert [band for band, _, _ in summary.rows] == ['low', 'high']
    text = (tmp_path / 'reconstruction_summary.txt').read_text()
    assert 'after 150 steps' in text
    assert 'low  band PSNR  17.00 dB, above' in text and '+1.50 dB' in text
    assert 'high band PSNR  18.60 dB, NOT above predicting zero' in text


def test_summary_without_metrics_writes_nothing(tmp_path: Path) -> None:
    summary = ReconstructionSummary()
    summary.on_train_end(_trainer(tmp_path, {}), None)  # type: ignore[arg-type]
    assert summary.rows == []
    assert not (tmp_path / 'reconstruction_summary.txt').exists()


@pytest.mark.parametrize('margin', [-1.0, float('nan'), '0.1'])
def test_bad_margin(margin: Any) -> None:
    with pytest.raises(ValueError, match='margin must be a finite number'):
        ReconstructionSummary(margin=margin)


def test_summary_without_logger_only_prints(tmp_path: Path) -> None:
    summary = ReconstructionSummary()
    trainer = _trainer(
        tmp_path, {'train_psnr_low_epoch': 1.0, 'train_psnr_low_baseline_epoch': 0.5}
    )
    trainer.loggers = []
    summary.on_train_end(trainer, None)  # type: ignore[arg-type]
    assert summary.rows == [('low', 1.0, 0.5)]
    assert not (tmp_path / 'reconstruction_summary.txt').exists()
