# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import torch
from PIL import Image
from rasterio.transform import from_origin

from tests.conftest import shared_path
from torchgeo_scalemae.datamodules import ImageFolderGSD, ImageFolderGSDDataModule
from torchgeo_scalemae.transforms import GSDRandomResizedCrop


def write_images(
    root: Path, classes: list[str] | None, n: int = 4, size: int = 16
) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for folder in classes or ['']:
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            path = root / folder / f'img_{i}.png'
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
                path
            )
            paths.append(path)
    return paths


def test_labelled_constant_gsd(tmp_path: Path) -> None:
    write_images(tmp_path, ['forest', 'airport'])
    ds = ImageFolderGSD(tmp_path, gsd=0.5)
    assert ds.labelled
    assert ds.classes == ['airport', 'forest']
    assert len(ds) == 8
    sample = ds[0]
    assert sample['image'].shape == (3, 16, 16)
    assert sample['image'].dtype == torch.float32
    assert sample['image'].max() > 1  # raw 0-255 values; the datamodule scales
    assert sample['gsd'].shape == ()
    assert sample['gsd'].item() == 0.5
    assert sample['label'].item() == 0
    assert ds[7]['label'].item() == 1


def test_flat_folder_csv(tmp_path: Path) -> None:
    paths = write_images(tmp_path, None, n=3)
    (tmp_path / 'gsd.csv').write_text('path,gsd\nimg_0.png,0.3\nimg_2.png,1.5\n')
    ds = ImageFolderGSD(tmp_path, gsd=10.0, gsd_csv=tmp_path / 'gsd.csv')
    assert not ds.labelled
    assert 'label' not in ds[0]
    assert [ds[i]['gsd'].item() for i in range(3)] == pytest.approx([0.3, 10.0, 1.5])
    # absolute paths work too; without a fallback a missing row is an error
    (tmp_path / 'abs.csv').write_text(f'path,gsd\n{paths[0]},2\n')
    ds = ImageFolderGSD(tmp_path, gsd_csv=tmp_path / 'abs.csv')
    assert ds[0]['gsd'].item() == 2.0
    with pytest.raises(ValueError, match=r'no GSD for .*img_1\.png'):
        ds[1]


@pytest.mark.parametrize(
    ('text', 'match'),
    [
        ('file,gsd\na.png,1\n', 'columns path,gsd'),
        ('path,gsd\nimg_0.png,0\n', "line 2 \\('img_0.png'\\).*positive"),
        ('path,gsd\nimg_0.png,-3\n', 'positive'),
        ('path,gsd\nimg_0.png,nan\n', 'positive'),
        ('path,gsd\nimg_0.png,abc\n', "'abc' is not a number"),
    ],
)
def test_bad_csv(tmp_path: Path, text: str, match: str) -> None:
    write_images(tmp_path, None, n=1)
    (tmp_path / 'gsd.csv').write_text(text)
    with pytest.raises(ValueError, match=match):
        ImageFolderGSD(tmp_path, gsd_csv=tmp_path / 'gsd.csv')


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match='not a folder'):
        ImageFolderGSD(tmp_path / 'missing', gsd=1.0)
    with pytest.raises(ValueError, match='no images'):
        ImageFolderGSD(tmp_path, gsd=1.0)
    write_images(tmp_path, None, n=1)
    for bad in (0.0, -1.0, float('nan'), float('inf')):
        with pytest.raises(ValueError, match='positive'):
            ImageFolderGSD(tmp_path, gsd=bad)
    with pytest.raises(ValueError, match='no GSD for'):
        ImageFolderGSD(tmp_path)[0]
    with pytest.raises(ValueError, match='image_size'):
        ImageFolderGSD(tmp_path, gsd=1.0, image_size=0)
    with pytest.raises(ValueError, match='val_split_pct'):
        ImageFolderGSDDataModule(str(tmp_path), gsd=1.0, val_split_pct=1.5)
    with pytest.raises(ValueError, match='< 1'):
        ImageFolderGSDDataModule(
            str(tmp_path), gsd=1.0, val_split_pct=0.5, test_split_pct=0.5
        )


def test_image_size_scales_gsd(tmp_path: Path) -> None:
    write_images(tmp_path / 'a', None, n=1, size=40)
    write_images(tmp_path / 'b', None, n=1, size=10)
    ds = ImageFolderGSD(tmp_path, gsd=1.0, image_size=20)
    assert ds[0]['image'].shape == (3, 20, 20)
    assert ds[0]['gsd'].item() == pytest.approx(2.0)  # 40 px -> 20 px
    assert ds[1]['gsd'].item() == pytest.approx(0.5)  # 10 px -> 20 px


def test_geotiff_in_folder_reads_gsd(tmp_path: Path) -> None:
    profile = {
        'driver': 'GTiff',
        'width': 8,
        'height': 8,
        'count': 3,
        'dtype': 'uint8',
        'crs': 'EPSG:32633',
        'transform': from_origin(500000, 4000000, 0.25, 0.25),
    }
    with rasterio.open(tmp_path / 'a.tif', 'w', **profile) as dst:
        dst.write(np.ones((3, 8, 8), dtype=np.uint8))
    ds = ImageFolderGSD(tmp_path)
    assert ds[0]['gsd'].item() == 0.25
    assert ds[0]['image'].shape == (3, 8, 8)


def test_datamodule_batches(tmp_path: Path) -> None:
    write_images(tmp_path, ['a', 'b', 'c'], n=10)
    csv = tmp_path / 'gsd.csv'
    csv.write_text(
        'path,gsd\n' + ''.join(f'a/img_{i}.png,{0.1 * (i + 1)}\n' for i in range(10))
    )
    dm = ImageFolderGSDDataModule(
        str(tmp_path),
        gsd=2.0,
        gsd_csv=str(csv),
        batch_size=30,
        val_split_pct=0.2,
        test_split_pct=0.1,
    )
    dm.setup('fit')
    dm.setup('test')
    assert len(dm.train_dataset) == 21  # type: ignore[arg-type]
    assert len(dm.val_dataset) == 6  # type: ignore[arg-type]
    assert len(dm.test_dataset) == 3  # type: ignore[arg-type]
    batch = next(iter(dm.val_dataloader()))
    # per-sample GSDs survive collation ...
    expected = torch.tensor(
        [
            0.1 * (int(dm.dataset.files[i].stem.split('_')[1]) + 1)
            if dm.dataset.targets[i] == 0
            else 2.0  # type: ignore[union-attr]
            for i in dm.val_dataset.indices  # type: ignore[union-attr]
        ]
    )
    assert batch['gsd'].shape == (6,)
    assert torch.allclose(batch['gsd'], expected)
    # ... the datamodule's normalisation (0-1) ...
    batch = dm.aug(batch)
    assert 0 <= batch['image'].min() and batch['image'].max() <= 1
    assert torch.allclose(batch['gsd'], expected)
    # ... and augmentation
    aug = GSDRandomResizedCrop(8)
    out = aug(batch)
    src = aug.crop._params['src']
    assert torch.allclose(out['gsd'], expected * (src[:, 1, 0] - src[:, 0, 0] + 1) / 8)
    assert batch['label'].shape == (6,)


def test_separate_val_root(tmp_path: Path) -> None:
    write_images(tmp_path / 'train', ['a', 'b'], n=2)
    write_images(tmp_path / 'val', ['a', 'b'], n=1)
    dm = ImageFolderGSDDataModule(
        str(tmp_path / 'train'),
        gsd=1.0,
        val_root=str(tmp_path / 'val'),
        test_split_pct=0.0,
    )
    dm.setup('fit')
    assert len(dm.train_dataset) == 4  # type: ignore[arg-type]
    assert len(dm.val_dataset) == 2  # type: ignore[arg-type]


@pytest.mark.shared
def test_aid150_subset() -> None:
    root = shared_path('data', 'aid150')
    dm = ImageFolderGSDDataModule(
        str(root),
        gsd=8.0,
        batch_size=8,
        max_per_class=2,
        val_split_pct=0.25,
        test_split_pct=0.0,
    )
    dm.setup('fit')
    assert len(dm.dataset.classes) == 30  # type: ignore[union-attr]
    assert len(dm.dataset) == 60  # type: ignore[arg-type]
    batch = dm.aug(next(iter(dm.train_dataloader())))
    assert batch['image'].shape == (8, 3, 150, 150)
    assert batch['image'].max() <= 1
    assert torch.equal(batch['gsd'], torch.full((8,), 8.0))
    assert batch['label'].dtype == torch.long


@pytest.mark.filterwarnings('ignore::rasterio.errors.NotGeoreferencedWarning')
def test_plain_tiff_needs_gsd(tmp_path: Path) -> None:
    with rasterio.open(
        tmp_path / 'plain.tif',
        'w',
        driver='GTiff',
        width=4,
        height=4,
        count=1,
        dtype='uint8',
    ) as dst:
        dst.write(np.zeros((1, 4, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match='no GSD for'):
        ImageFolderGSD(tmp_path)[0]
    sample = ImageFolderGSD(tmp_path, gsd=3.0)[0]
    assert sample['image'].shape == (1, 4, 4)
    assert sample['gsd'].item() == 3.0


def test_csv_row_naming_no_file(tmp_path: Path) -> None:
    write_images(tmp_path, None, n=2)
    (tmp_path / 'gsd.csv').write_text('path,gsd\nimg_0.png,1\nimg_9.png,2\n')
    with pytest.raises(
        ValueError, match=r"gsd\.csv, line 3 \('img_9\.png'\): no such file"
    ):
        ImageFolderGSD(tmp_path, gsd=1.0, gsd_csv=tmp_path / 'gsd.csv')
    (tmp_path / 'empty.csv').write_text('path,gsd\n,1\n')
    with pytest.raises(ValueError, match=r"line 2 \(''\): the path is empty"):
        ImageFolderGSD(tmp_path, gsd=1.0, gsd_csv=tmp_path / 'empty.csv')


def test_csv_duplicate_rows(tmp_path: Path) -> None:
    write_images(tmp_path, None, n=2)
    # the same file under two spellings is still the same file
    (tmp_path / 'gsd.csv').write_text('path,gsd\nimg_0.png,1\n./img_0.png,2\n')
    with pytest.raises(
        ValueError,
        match=r"line 3 \('\./img_0\.png'\): '.*img_0\.png' is listed twice "
        r'\(first on line 2\)',
    ):
        ImageFolderGSD(tmp_path, gsd_csv=tmp_path / 'gsd.csv')


@pytest.mark.parametrize(
    ('data', 'match'),
    [
        (bytes(range(256)) * 4, r'bin\.csv: the GSD CSV is not a text file'),
        (b'path,gsd\n\xff\xfe\xfa,1\n', r'bin\.csv: the GSD CSV is not UTF-8 text'),
    ],
)
def test_binary_csv(tmp_path: Path, data: bytes, match: str) -> None:
    write_images(tmp_path, None, n=1)
    (tmp_path / 'bin.csv').write_bytes(data)
    with pytest.raises(ValueError, match=match):
        ImageFolderGSD(tmp_path, gsd_csv=tmp_path / 'bin.csv')


def test_csv_with_byte_order_mark(tmp_path: Path) -> None:
    write_images(tmp_path, None, n=1)
    (tmp_path / 'gsd.csv').write_bytes(b'\xef\xbb\xbfpath,gsd\nimg_0.png,0.7\n')
    ds = ImageFolderGSD(tmp_path, gsd_csv=tmp_path / 'gsd.csv')
    assert ds[0]['gsd'].item() == pytest.approx(0.7)


def test_one_csv_serves_train_and_val_roots(tmp_path: Path) -> None:
    write_images(tmp_path / 'train', ['a', 'b'], n=1)
    write_images(tmp_path / 'val', ['a', 'b'], n=1, size=8)
    (tmp_path / 'val' / 'a' / 'extra.png').write_bytes(
        (tmp_path / 'val' / 'a' / 'img_0.png').read_bytes()
    )
    # 'a/img_0.png' exists in both roots; 'a/extra.png' only under val
    csv = tmp_path / 'gsd.csv'
    csv.write_text('path,gsd\na/img_0.png,0.5\na/extra.png,4\n')
    dm = ImageFolderGSDDataModule(
        str(tmp_path / 'train'),
        gsd=1.0,
        gsd_csv=str(csv),
        val_root=str(tmp_path / 'val'),
        test_split_pct=0.0,
    )
    dm.setup('fit')
    val = dm.val_dataset
    assert isinstance(val, ImageFolderGSD)
    gsds = {
        f.relative_to(val.root).as_posix(): val.gsd_of(i)
        for i, f in enumerate(val.files)
    }
    # a relative row counts under every root where the file exists
    assert gsds == {'a/extra.png': 4.0, 'a/img_0.png': 0.5, 'b/img_0.png': 1.0}
    train = dm.dataset
    assert isinstance(train, ImageFolderGSD)
    assert [train.gsd_of(i) for i in range(len(train))] == [0.5, 1.0]


def test_unreadable_images_name_the_file(tmp_path: Path) -> None:
    import io

    buffer = io.BytesIO()
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(buffer, 'PNG')
    (tmp_path / 'truncated.png').write_bytes(buffer.getvalue()[:500])
    (tmp_path / 'text.tif').write_text('not a raster')
    (tmp_path / 'text.png').write_text('not an image')
    ds = ImageFolderGSD(tmp_path, gsd=1.0)
    assert [f.name for f in ds.files] == ['text.png', 'text.tif', 'truncated.png']
    for index, name in enumerate(['text.png', 'text.tif', 'truncated.png']):
        with pytest.raises(OSError, match=rf"cannot read the image '.*{name}'"):
            ds[index]


def test_bad_mode_raises_at_construction(tmp_path: Path) -> None:
    write_images(tmp_path, None, n=1)
    with pytest.raises(ValueError, match=r"mode must be None or a PIL mode.*'XYZ'"):
        ImageFolderGSD(tmp_path, gsd=1.0, mode='XYZ')
    dm = ImageFolderGSDDataModule(str(tmp_path), gsd=1.0, mode='XYZ')
    with pytest.raises(ValueError, match="'XYZ'"):
        dm.setup('fit')
    assert ImageFolderGSD(tmp_path, gsd=1.0, mode='L')[0]['image'].shape == (1, 16, 16)


def test_different_sizes_suggest_image_size(tmp_path: Path) -> None:
    write_images(tmp_path / 'a', None, n=1, size=16)
    write_images(tmp_path / 'b', None, n=1, size=20)
    dm = ImageFolderGSDDataModule(
        str(tmp_path),
        gsd=1.0,
        batch_size=2,
        val_split_pct=0.0,
        test_split_pct=0.0,
        labelled=False,
    )
    dm.setup('fit')
    with pytest.raises(
        ValueError,
        match=r'cannot batch images of different sizes \[\(3, 16, 16\), '
        r'\(3, 20, 20\)\].*image_size=',
    ):
        next(iter(dm.train_dataloader()))
    dm = ImageFolderGSDDataModule(
        str(tmp_path),
        gsd=1.0,
        batch_size=2,
        val_split_pct=0.0,
        test_split_pct=0.0,
        labelled=False,
        image_size=16,
    )
    dm.setup('fit')
    assert next(iter(dm.train_dataloader()))['image'].shape == (2, 3, 16, 16)


@pytest.mark.parametrize(
    ('kwargs', 'error', 'match'),
    [
        ({'gsd': 'abc'}, ValueError, "gsd: GSD must be .*got 'abc'"),
        ({'gsd': 1.0, 'extensions': 'png'}, ValueError, r"extensions .*\('png',\)"),
        ({'gsd': 1.0, 'extensions': []}, ValueError, r'extensions .*got \[\]'),
        ({'gsd': 1.0, 'max_per_class': 0}, ValueError, 'max_per_class must be >= 1'),
        ({'gsd': 1.0, 'labelled': 'yes'}, TypeError, "labelled must be True or.*'yes'"),
        (
            {'gsd': 1.0, 'transforms': 3},
            TypeError,
            'transforms must be callable, got 3',
        ),
        ({'gsd': 1.0, 'image_size': 2.5}, ValueError, 'image_size .*got 2.5'),
    ],
)
def test_dataset_bad_arguments(
    tmp_path: Path, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    write_images(tmp_path, None, n=1)
    with pytest.raises(error, match=match):
        ImageFolderGSD(tmp_path, **kwargs)


@pytest.mark.parametrize(
    ('kwargs', 'error', 'match'),
    [
        ({'batch_size': 0}, ValueError, 'batch_size must be >= 1, got 0'),
        ({'num_workers': -2}, ValueError, 'num_workers must be >= 0, got -2'),
        ({'val_split_pct': 'a'}, TypeError, "val_split_pct must be a number.*'a'"),
        ({'test_split_pct': -0.1}, ValueError, r'test_split_pct .*got -0\.1'),
        ({'std': 0.0}, ValueError, 'std must be finite and positive, got 0.0'),
        ({'mean': [0.0, float('nan')]}, ValueError, r'mean must be finite.*nan'),
        ({'seed': None}, TypeError, 'seed must be an int, got NoneType'),
    ],
)
def test_datamodule_bad_arguments(
    tmp_path: Path, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        ImageFolderGSDDataModule(str(tmp_path), gsd=1.0, **kwargs)


def test_split_leaving_no_training_image(tmp_path: Path) -> None:
    write_images(tmp_path, None, n=2)
    dm = ImageFolderGSDDataModule(
        str(tmp_path), gsd=1.0, val_split_pct=0.45, test_split_pct=0.45
    )
    with pytest.raises(
        ValueError,
        match=r'the 2 images under .* leave no training image after '
        r'val_split_pct=0\.45 \(1 images\) and test_split_pct=0\.45 \(1 images\)',
    ):
        dm.setup('fit')
