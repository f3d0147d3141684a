# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

import json
from pathlib import Path

import lightning as L
import pytest
import timm
import torch
from torch.utils.data import DataLoader, Dataset

import torchgeo_scalemae  # noqa: F401  (registers the timm entry points)
from torchgeo_scalemae.evaluation.backbone import build_encoder, load_encoder_weights
from torchgeo_scalemae.models import ScaleMAEEncoder, encoder_from_checkpoint
from torchgeo_scalemae.models.export import export_encoder, main
from torchgeo_scalemae.tasks import ScaleMAEPretraining

from ..test_gsd import python_blocks

TINY = 'scalemae_pretrain_vit_tiny_patch16'
SIZE = {'embed_dim': 48, 'depth': 3, 'num_heads': 3}


class _Images(Dataset[dict[str, torch.Tensor]]):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(i)
        return {'image': torch.rand(3, 64, 64, generator=g), 'gsd': torch.tensor(1.0)}


@pytest.fixture(scope='module')
def checkpoint(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, ScaleMAEPretraining]:
    folder = tmp_path_factory.mktemp('export')
    task = ScaleMAEPretraining(
        model=TINY,
        input_size=32,
        lr=1e-3,
        warmup_steps=1,
        image_log_interval=0,
        reference_gsd=2.0,
        model_kwargs=dict(SIZE),
    )
    trainer = L.Trainer(
        accelerator='cpu',
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(folder),
    )
    trainer.fit(task, DataLoader(_Images(), batch_size=2))
    path = folder / 'last.ckpt'
    trainer.save_checkpoint(path)
    return path, task


def test_encoder_from_checkpoint_rebuilds_and_loads_strictly(
    checkpoint: tuple[Path, ScaleMAEPretraining],
) -> None:
    path, task = checkpoint
    encoder = encoder_from_checkpoint(path)
    assert isinstance(encoder, ScaleMAEEncoder) and not encoder.training
    assert encoder.embed_dim == 48 and len(encoder.blocks) == 3
    trained = task.model.encoder.state_dict()
    assert encoder.state_dict().keys() == trained.keys()
    for key, value in encoder.state_dict().items():
        assert torch.equal(value, trained[key]), key
    x = torch.rand(2, 3, 32, 32)
    res = torch.tensor([0.5, 1.0])
    task.model.encoder.eval()
    torch.testing.assert_close(
        encoder.forward_features(x, res=res),
        task.model.encoder.forward_features(x, res=res),
    )


def test_export_is_usable_by_evaluation_and_timm(
    checkpoint: tuple[Path, ScaleMAEPretraining], tmp_path: Path
) -> None:
    from safetensors import safe_open

    path, task = checkpoint
    out = export_encoder(path, tmp_path / 'encoder.safetensors')
    with safe_open(str(out), 'pt') as f:
        meta = f.metadata()
    config = json.loads(meta['encoder_config'])
    assert config['embed_dim'] == 48 and config['depth'] == 3
    assert float(meta['reference_gsd']) == 2.0
    reference = task.model.encoder.patch_embed.proj.weight
    # evaluation tasks: weights=<file>
    encoder = build_encoder('scalemae_vit', model_kwargs=config)
    load_encoder_weights(encoder, str(out))
    assert torch.equal(encoder.patch_embed.proj.weight, reference)
    # timm, with the file as pretrained weights
    model = timm.create_model(
        'scalemae_vit_tiny_patch16',
        pretrained=True,
        pretrained_cfg_overlay={'file': str(out)},
        num_classes=0,
        **{k: v for k, v in config.items() if k != 'img_size'},
    )
    assert torch.equal(model.patch_embed.proj.weight, reference)


def test_command_line(
    checkpoint: tuple[Path, ScaleMAEPretraining],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path, _ = checkpoint
    out = tmp_path / 'cli.safetensors'
    assert main([str(path), str(out)]) == 0
    assert out.is_file()
    assert 'reference_gsd=2' in capsys.readouterr().out
    assert main([str(path), str(tmp_path / 'x.pt')]) == 2
    assert 'must end in .safetensors' in capsys.readouterr().err


def test_bad_checkpoints(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match='weights file not found'):
        encoder_from_checkpoint(tmp_path / 'missing.ckpt')
    garbage = tmp_path / 'garbage.ckpt'
    garbage.write_bytes(b'\x00\x01not a checkpoint')
    with pytest.raises(ValueError, match='is not a checkpoint'):
        encoder_from_checkpoint(garbage)
    empty = tmp_path / 'empty.ckpt'
    empty.write_bytes(b'')
    with pytest.raises(ValueError, match='is not a checkpoint'):
        encoder_from_checkpoint(empty)
    plain = tmp_path / 'plain.ckpt'
    torch.save({'weight': torch.zeros(1)}, plain)
    with pytest.raises(ValueError, match='is not a Lightning checkpoint'):
        encoder_from_checkpoint(plain)
    other = tmp_path / 'other.ckpt'
    torch.save({'state_dict': {'x': torch.zeros(1)}, 'hyper_parameters': {}}, other)
    with pytest.raises(ValueError, match='not a ScaleMAEPretraining checkpoint'):
        encoder_from_checkpoint(other)


def test_export_output_checks(
    checkpoint: tuple[Path, ScaleMAEPretraining], tmp_path: Path
) -> None:
    path, _ = checkpoint
    with pytest.raises(FileNotFoundError, match='output folder does not exist'):
        export_encoder(path, tmp_path / 'no' / 'such' / 'e.safetensors')
    with pytest.raises(ValueError, match=r'must end in \.safetensors'):
        export_encoder(path, tmp_path / 'e.bin')


def test_pretraining_guide_example_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The timm example of docs/user/pretraining.rst, on a checkpoint of that size."""
    task = ScaleMAEPretraining(
        model=TINY,
        input_size=64,
        model_kwargs={'embed_dim': 192, 'depth': 4, 'num_heads': 3},
    )
    path = tmp_path / 'last.ckpt'
    torch.save(
        {
            'state_dict': {f'model.{k}': v for k, v in task.model.state_dict().items()},
            'hyper_parameters': dict(task.hparams),
        },
        path,
    )
    monkeypatch.chdir(tmp_path)
    export_encoder(path, tmp_path / 'encoder.safetensors')
    page = Path(__file__).resolve().parents[2] / 'docs' / 'user' / 'pretraining.rst'
    blocks = python_blocks(page.read_text())
    assert len(blocks) == 1
    namespace: dict[str, object] = {}
    exec(compile(blocks[0], str(page), 'exec'), namespace)  # noqa: S102
    model = namespace['model']
    assert isinstance(model, torch.nn.Module)
    assert torch.equal(
        model.patch_embed.proj.weight,  # type: ignore[union-attr]
        task.model.encoder.patch_embed.proj.weight,
    )
