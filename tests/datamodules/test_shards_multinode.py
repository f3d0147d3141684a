# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

"""Two simulated nodes x one process on the CPU (gloo), launched as torchrun would.

Each process gets the environment variables Lightning's ``LightningEnvironment``
reads (``MASTER_ADDR``, ``MASTER_PORT``, ``NODE_RANK``, ``LOCAL_RANK``,
``WORLD_SIZE``), trains a few steps on the shards with ``num_nodes=2, devices=1``,
saves ``last.ckpt``, then a second fit in the same processes resumes from it. The
test checks that the ranks read disjoint shards and that the resumed run continues
each rank's sample stream exactly (across an epoch boundary).
"""

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
from PIL import Image

from torchgeo_scalemae.datamodules import ShardedGSDDataset, read_manifest
from torchgeo_scalemae.datamodules.shard_writer import write_folder_shards

REPO = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import json
    import sys
    import warnings

    import lightning as L
    import torch
    from lightning.pytorch.callbacks import ModelCheckpoint

    from torchgeo_scalemae.datamodules import ShardedGSDDataModule

    warnings.filterwarnings('ignore')


    class Recorder(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))
            self.seen = []

        def training_step(self, batch, batch_idx):
            self.seen.append(batch['index'].tolist())
            return (self.weight * batch['image'].mean()).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)


    def fit(max_steps, ckpt_path=None):
        datamodule = ShardedGSDDataModule(
            shards, batch_size=2, shuffle_buffer=4, metadata=['index']
        )
        model = Recorder()
        trainer = L.Trainer(
            accelerator='cpu',
            devices=1,
            num_nodes=2,
            strategy='ddp',
            max_steps=max_steps,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=out,
            callbacks=[
                ModelCheckpoint(
                    dirpath=out, save_last=True, save_top_k=0, every_n_train_steps=3
                )
            ],
        )
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
        return trainer, model


    if __name__ == '__main__':
        torch.set_num_threads(1)
        shards, out = sys.argv[1], sys.argv[2]
        first, model_a = fit(3)
        second, model_b = fit(11, ckpt_path=out + '/last.ckpt')
        result = {
            'rank': first.global_rank,
            'world_size': first.world_size,
            'first': model_a.seen,
            'second': model_b.seen,
            'steps': second.global_step,
        }
        with open(f'{out}/rank{first.global_rank}.json', 'w') as f:
            json.dump(result, f)
    """
)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))
        return int(sock.getsockname()[1])


def _shards(tmp_path: Path) -> Path:
    images = tmp_path / 'images'
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(32):
        array = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
        Image.fromarray(array).save(images / f'{i:02d}.png')
    out = tmp_path / 'shards'
    write_folder_shards(images, out, gsd=0.5, samples_per_shard=4, progress=False)
    return out


def test_two_nodes_disjoint_shards_and_exact_resume(tmp_path: Path) -> None:
    shards = _shards(tmp_path)
    script = tmp_path / 'two_nodes.py'
    script.write_text(SCRIPT)
    out = tmp_path / 'run'
    out.mkdir()
    port = _free_port()
    processes = []
    for node in range(2):
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(('SLURM_', 'TORCHELASTIC_', 'PL_', 'GROUP_RANK'))
        }
        env.update(
            MASTER_ADDR='127.0.0.1',
            MASTER_PORT=str(port),
            NODE_RANK=str(node),
            LOCAL_RANK='0',
            WORLD_SIZE='2',
            PYTHONPATH=str(REPO),
            OMP_NUM_THREADS='1',
        )
        processes.append(
            subprocess.Popen(
                [sys.executable, str(script), str(shards), str(out)],
                env=env,
                cwd=tmp_path,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    logs = []
    try:
        for process in processes:
            logs.append(process.communicate(timeout=240)[0])
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    for process, log in zip(processes, logs, strict=True):
        assert process.returncode == 0, log[-3000:]
    results = [json.loads((out / f'rank{r}.json').read_text()) for r in range(2)]
    assert [r['rank'] for r in results] == [0, 1]
    assert all(r['world_size'] == 2 and r['steps'] == 11 for r in results)

    manifest = read_manifest(shards)
    dataset = ShardedGSDDataset(
        [s['url'] for s in manifest['shards']],
        [s['count'] for s in manifest['shards']],
        batch_size=2,
        world_size=2,
        shuffle_buffer=4,
        metadata=['index'],
    )
    assert dataset.samples_per_slot == 16  # 8 shards of 4 over 2 ranks: 8 batches
    for epoch in (0, 1):
        mine = [set(dataset.slot_shards(epoch, rank)) for rank in (0, 1)]
        assert mine[0].isdisjoint(mine[1]) and len(mine[0] | mine[1]) == 8
    for result in results:
        rank = result['rank']
        expected = []
        for epoch in (0, 1):
            indexes = [int(s['index']) for s in dataset.iter_slot(epoch, rank)]
            expected += [indexes[i : i + 2] for i in range(0, 16, 2)]
        # the first run trained steps 0-2, the resumed run steps 3-10: exactly the
        # stream of an uninterrupted run (epoch 0's 8 batches, then epoch 1's)
        assert result['first'] == expected[:3]
        assert result['second'] == expected[3:11]
    # the two ranks never read the same sample within an epoch
    first_epoch = [
        {i for batch in (r['first'] + r['second'])[:8] for i in batch} for r in results
    ]
    assert first_epoch[0].isdisjoint(first_epoch[1])
    assert len(first_epoch[0] | first_epoch[1]) == 32
