# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader

from torchgeo_scalemae.callbacks import ReconstructionImages, reconstruction_grid
from torchgeo_scalemae.callbacks.images import GRID_COLUMNS
from torchgeo_scalemae.tasks import ScaleMAEPretraining


@pytest.mark.parametrize(
    ('kwargs', 'match'),
    [
        ({'every_n_steps': 0}, 'every_n_steps'),
        ({'max_samples': 0}, 'max_samples'),
        ({'tag': ''}, 'tag'),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ReconstructionImages(**kwargs)


def _task() -> ScaleMAEPretraining:
    return ScaleMAEPretraining(
        model='scalemae_pretrain_vit_tiny_patch16',
        input_size=32,
        image_log_interval=0,
        warmup_steps=1,
        lr=1e-3,
        default_gsd=1.0,
    )


def test_grid_shape_and_range() -> None:
    task = _task()
    pair = task.scale_pair({'image': torch.rand(3, 3, 64, 64)}, train=False)
    with torch.no_grad():
        out = task.model(pair['image'], res=pair['gsd'], targets=pair['target'])
    grid = reconstruction_grid(task.model, pair, out, max_samples=2)
    # 7 titled columns of 64 px + padding, two rows under a 14-px title row
    assert grid.shape == (3, 14 + 2 * 64 + 3 * 2, len(GRID_COLUMNS) * 66 + 2)
    assert float(grid.min()) >= 0.0 and float(grid.max()) <= 1.0


def test_logging_images_does_not_change_training(tmp_path: Path) -> None:
    """The fixed samples are drawn with the random state saved and restored."""

    def fit(callbacks: list[Any]) -> torch.Tensor:
        L.seed_everything(0)
        task = _task()
        trainer = L.Trainer(
            accelerator='cpu',
            max_steps=2,
            logger=CSVLogger(str(tmp_path)),
            callbacks=callbacks,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        images = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))
        loader = DataLoader([{'image': x} for x in images], batch_size=2)
        trainer.fit(task, loader)
        return task.model.encoder.patch_embed.proj.weight.detach().clone()

    with_images = fit([ReconstructionImages(every_n_steps=1, max_samples=1)])
    without = fit([])
    torch.testing.assert_close(with_images, without, rtol=0, atol=0)
    assert len(list(tmp_path.rglob('reconstruction_step*.png'))) == 2


def test_wrong_task_is_a_clear_error(tmp_path: Path) -> None:
    class Plain(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = torch.nn.Linear(2, 1)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            return self.model(batch).sum()

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    trainer = L.Trainer(
        accelerator='cpu',
        max_steps=1,
        logger=CSVLogger(str(tmp_path)),
        callbacks=[ReconstructionImages(every_n_steps=1)],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with pytest.raises(TypeError, match=r'\.model is a ScaleMAE'):
        trainer.fit(Plain(), DataLoader(torch.ones(2, 2), batch_size=2))
