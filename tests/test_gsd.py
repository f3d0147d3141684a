# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

import math
import re
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from torchgeo_scalemae.gsd import GSD_KEY, check_gsd, gsd_from_batch, gsd_to_res


def test_key() -> None:
    assert GSD_KEY == 'gsd'


def test_check_gsd_scalar_broadcast() -> None:
    out = check_gsd(0.5, 3)
    assert out.dtype == torch.float32
    assert out.shape == (3,)
    assert torch.equal(out, torch.full((3,), 0.5))
    assert check_gsd(2).shape == (1,)


def test_check_gsd_tensor() -> None:
    gsd = torch.tensor([0.3, 10.0], dtype=torch.float64)
    out = check_gsd(gsd, 2)
    assert out.dtype == torch.float32
    assert torch.allclose(out, gsd.float())
    assert check_gsd(torch.tensor(4.0), 5).shape == (5,)
    assert check_gsd(torch.tensor([[1.0], [2.0]])).tolist() == [1.0, 2.0]


@pytest.mark.parametrize(
    ('gsd', 'match'),
    [
        (None, 'missing'),
        (0.0, 'positive'),
        (-1.0, 'positive'),
        (math.nan, 'positive'),
        (math.inf, 'positive'),
        (torch.tensor([1.0, -2.0]), r'bad values \[-2.0\] at batch index \[1\]'),
        (torch.tensor([1.0, math.nan]), 'finite and positive'),
        (torch.tensor([0.0, 1.0]), 'at batch index \\[0\\]'),
        (torch.ones(2, 2), r'shape \(B,\)'),
        (torch.ones(3), '3 values but the batch has 2'),
        (torch.ones(0), '0 values'),
    ],
)
def test_check_gsd_bad(gsd: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        check_gsd(gsd, 2)  # type: ignore[arg-type]


def test_check_gsd_types() -> None:
    with pytest.raises(TypeError, match='number or a tensor'):
        check_gsd('1.0')  # type: ignore[arg-type]
    with pytest.raises(TypeError, match='number or a tensor'):
        check_gsd(True)
    with pytest.raises(TypeError, match='real tensor'):
        check_gsd(torch.tensor([True]))
    with pytest.raises(ValueError, match='batch_size'):
        check_gsd(1.0, 0)


def test_check_gsd_skip_values() -> None:
    # hot-path mode: shapes are still checked, values are not
    out = check_gsd(torch.tensor([-1.0, 2.0]), 2, check_values=False)
    assert out.tolist() == [-1.0, 2.0]
    with pytest.raises(ValueError, match='shape'):
        check_gsd(torch.ones(2, 3), check_values=False)


def test_gsd_to_res() -> None:
    gsd = torch.tensor([0.5, 10.0])
    assert torch.equal(gsd_to_res(gsd), gsd)
    assert torch.allclose(gsd_to_res(gsd, 2.5), torch.tensor([0.2, 4.0]))
    for bad in (0.0, -1.0, math.nan, math.inf, True):
        with pytest.raises(ValueError, match='reference_gsd'):
            gsd_to_res(gsd, bad)


def test_gsd_to_res_numbers() -> None:
    # a Python (or NumPy) number gives a Python float
    assert gsd_to_res(0.5) == 0.5
    assert isinstance(gsd_to_res(0.5), float)
    assert gsd_to_res(2, 4.0) == 0.5
    assert gsd_to_res(np.float32(3.0)) == 3.0
    assert gsd_to_res(torch.tensor(2.0), 2).item() == 1.0


@pytest.mark.parametrize('bad', [0.0, -1.5, math.nan, math.inf])
def test_gsd_to_res_rejects_bad_gsd(bad: float) -> None:
    with pytest.raises(ValueError, match=f'gsd must be .*got {bad!r}'):
        gsd_to_res(bad)
    tensor = torch.tensor([1.0, bad])
    with pytest.raises(ValueError, match=rf'bad values \[{bad!r}\]'):
        gsd_to_res(tensor)
    # hot paths can opt out; a CUDA tensor is only checked with check_values=True
    assert gsd_to_res(tensor, check_values=False).shape == (2,)


def test_gsd_to_res_types() -> None:
    for bad in ('0.5', [0.5], None, True):
        match = 'gsd must be a number or a tensor.*' + re.escape(repr(bad))
        with pytest.raises(TypeError, match=match):
            gsd_to_res(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r'real tensor, got dtype torch\.bool'):
        gsd_to_res(torch.tensor([True]))
    with pytest.raises(TypeError, match="check_values must be a bool or None, got 'x'"):
        gsd_to_res(1.0, check_values='x')  # type: ignore[call-overload]
    with pytest.raises(ValueError, match=r"reference_gsd .*got '1'"):
        gsd_to_res(1.0, '1')  # type: ignore[call-overload]


def test_check_gsd_numpy_number() -> None:
    assert check_gsd(np.float64(0.25), 2).tolist() == [0.25, 0.25]
    with pytest.raises(ValueError, match=r'got np\.float32\(-1\.0\)'):
        check_gsd(np.float32(-1.0))  # type: ignore[arg-type]


def test_gsd_from_batch_order() -> None:
    image = torch.zeros(2, 3, 8, 8)
    bounds = torch.zeros(2, 9)
    bounds[:, 2] = torch.tensor([0.6, 1.2])
    # 1. explicit gsd wins
    out = gsd_from_batch(
        {'image': image, 'gsd': torch.tensor([3.0, 4.0]), 'bounds': bounds}
    )
    assert out.tolist() == [3.0, 4.0]
    # 2. GeoDataset bounds
    out = gsd_from_batch({'image': image, 'bounds': bounds})
    assert torch.allclose(out, torch.tensor([0.6, 1.2]))
    # 3. default
    out = gsd_from_batch({'image': image}, 0.3048)
    assert out.shape == (2,)
    assert torch.allclose(out, torch.full((2,), 0.3048))
    # unbatched sample
    assert gsd_from_batch({'image': image[0]}, 1.0).shape == (1,)


def test_gsd_from_batch_errors() -> None:
    image = torch.zeros(2, 3, 8, 8)
    with pytest.raises(ValueError, match="no 'gsd' entry"):
        gsd_from_batch({'image': image})
    with pytest.raises(ValueError, match='3 values but the batch has 2'):
        gsd_from_batch({'image': image, 'gsd': torch.ones(3)})
    with pytest.raises(ValueError, match='positive'):
        gsd_from_batch({'image': image, 'gsd': torch.tensor([1.0, 0.0])})
    with pytest.raises(TypeError, match='dict'):
        gsd_from_batch([image])  # type: ignore[arg-type]


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_gsd_from_batch_cuda() -> None:
    image = torch.zeros(2, 3, 8, 8, device='cuda')
    out = gsd_from_batch({'image': image}, 0.5)
    assert out.device.type == 'cuda'


DOCS = Path(__file__).resolve().parents[1] / 'docs' / 'user' / 'gsd.rst'


def python_blocks(text: str) -> list[str]:
    blocks, lines, inside = [], [], False
    for line in [*text.splitlines(), 'END']:
        if inside and line and not line.startswith(' '):
            blocks.append(textwrap.dedent('\n'.join(lines)))
            inside, lines = False, []
        if inside:
            lines.append(line)
        if line.strip() == '.. code-block:: python':
            inside = True
    return blocks


def test_user_guide_examples_run(capsys: pytest.CaptureFixture[str]) -> None:
    blocks = python_blocks(DOCS.read_text())
    assert len(blocks) == 3
    for block in blocks:
        exec(compile(block, str(DOCS), 'exec'), {})  # noqa: S102
    out = capsys.readouterr().out
    assert 'tensor([0.1000, 0.2000, 0.4000, 0.1000, 0.2000, 0.4000])' in out
    assert "['gsd', 'image', 'label']" in out
    assert (
        'tensor([0.3000, 1.0000, 1.0000, 1.0000, 1.0000, 1.0000, 1.0000, 2.0000])'
        in out
    )


def test_user_guide_lists_known_gsd() -> None:
    from torchgeo_scalemae.datamodules import KNOWN_GSD

    text = DOCS.read_text()
    for name in KNOWN_GSD:
        assert name in text, name


@pytest.mark.parametrize(
    'default', ['abc', [1.0], float('nan'), float('inf'), -1.0, 0, True]
)
def test_gsd_from_batch_validates_default_gsd_always(default: object) -> None:
    batch = {'image': torch.rand(2, 3, 8, 8), GSD_KEY: torch.ones(2)}
    with pytest.raises(ValueError, match=r'default_gsd must be None or a finite'):
        gsd_from_batch(batch, default)  # type: ignore[arg-type]
    assert gsd_from_batch(batch, np.float32(0.5)).tolist() == [1.0, 1.0]
