# Copyright (c) torchgeo-scalemae contributors. Licensed under the MIT License.

import io
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from matplotlib.figure import Figure
from PIL import Image
from rasterio.transform import from_origin

from tests.conftest import shared_path
from torchgeo_scalemae.datamodules import (
    SegmentationFolderGSD,
    SegmentationFolderGSDDataModule,
    read_split_file,
)

CODE = 40  # red channel = class * CODE, so the image encodes its mask


def coded_pair(size: tuple[int, int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Return an RGB image whose red band is mask * CODE, green the row, blue the col.

    The mask is made of 4 x 4 blocks of random classes 0-5.
    """
    height, width = size
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 6, (height // 4 + 1, width // 4 + 1))
    mask = np.kron(blocks, np.ones((4, 4), dtype=np.int64))[:height, :width]
    rows, cols = np.mgrid[:height, :width]
    image = np.stack([mask * CODE, rows, cols], axis=-1).astype(np.uint8)
    return image, mask.astype(np.uint8)


def write_folder(
    root: Path,
    n: int = 4,
    size: tuple[int, int] = (32, 32),
    image_ext: str = '.png',
    mask_ext: str = '.png',
) -> list[str]:
    (root / 'images').mkdir(parents=True, exist_ok=True)
    (root / 'masks').mkdir(parents=True, exist_ok=True)
    stems = []
    for i in range(n):
        stem = f'tile_{i:02d}'
        image, mask = coded_pair(size, seed=i)
        kind = 'JPEG' if image_ext in ('.jpg', '.jpeg') else 'PNG'
        Image.fromarray(image).save(root / 'images' / f'{stem}{image_ext}', kind)
        Image.fromarray(mask).save(root / 'masks' / f'{stem}{mask_ext}', 'PNG')
        stems.append(stem)
    return stems


def write_tif(
    path: Path, array: np.ndarray, crs: str | None, res: float = 0.25
) -> None:
    profile = {
        'driver': 'GTiff',
        'height': array.shape[1],
        'width': array.shape[2],
        'count': array.shape[0],
        'dtype': array.dtype.name,
    }
    if crs is not None:
        profile['crs'] = crs
        profile['transform'] = from_origin(500000, 4000000, res, res)
    with rasterio.open(path, 'w', **profile) as dst:
        dst.write(array)


def check_aligned(sample: dict[str, torch.Tensor], original: np.ndarray) -> None:
    """The red band still encodes the mask, and both come from the same pixels."""
    image, mask = sample['image'], sample['mask']
    assert torch.equal(image[0], mask.float() * CODE)
    rows = image[1].long().numpy()
    cols = image[2].long().numpy()
    assert np.array_equal(mask.numpy(), original[rows, cols])


def test_reads_pairs(tmp_path: Path) -> None:
    stems = write_folder(tmp_path, n=3, size=(20, 24))
    ds = SegmentationFolderGSD(tmp_path, gsd=0.5, num_classes=6)
    assert ds.stems == stems
    assert len(ds) == 3
    sample = ds[1]
    assert sample['image'].shape == (3, 20, 24)
    assert sample['image'].dtype == torch.float32
    assert sample['mask'].shape == (20, 24)
    assert sample['mask'].dtype == torch.int64
    assert sample['gsd'].shape == ()
    assert sample['gsd'].dtype == torch.float32
    assert sample['gsd'].item() == 0.5
    original = coded_pair((20, 24), seed=1)[1]
    assert np.array_equal(sample['mask'].numpy(), original)
    check_aligned(sample, original)


def test_random_crops_and_flips_keep_the_mask_aligned(tmp_path: Path) -> None:
    write_folder(tmp_path, n=1, size=(40, 48))
    original = coded_pair((40, 48), seed=0)[1]
    ds = SegmentationFolderGSD(
        tmp_path, gsd=1.0, patch_size=16, scale_range=(1.0, 1.0), flips=True
    )
    corners = set()
    flips = set()
    for _ in range(30):
        sample = ds[0]
        assert sample['image'].shape == (3, 16, 16)
        assert sample['mask'].shape == (16, 16)
        assert sample['gsd'].item() == 1.0  # crop without resizing: GSD unchanged
        check_aligned(sample, original)
        rows, cols = sample['image'][1], sample['image'][2]
        corners.add((int(rows.min()), int(cols.min())))
        flips.add((bool(rows[0, 0] > rows[-1, 0]), bool(cols[0, 0] > cols[0, -1])))
    assert len(corners) > 5  # the crops move
    assert flips == {(False, False), (False, True), (True, False), (True, True)}


def test_resized_crops_keep_the_mask_aligned(tmp_path: Path) -> None:
    write_folder(tmp_path, n=1, size=(40, 40))
    original = coded_pair((40, 40), seed=0)[1]
    # crops of 8 pixels upsampled to 16: each output pixel's bilinear coordinate is
    # 0.25 px from a source pixel centre, and its mask is that source pixel's class
    ds = SegmentationFolderGSD(
        tmp_path, gsd=2.0, patch_size=16, scale_range=(0.5, 0.5), flips=True
    )
    for _ in range(10):
        sample = ds[0]
        assert sample['gsd'].item() == pytest.approx(2.0 * 8 / 16)
        rows = np.floor(sample['image'][1].numpy() + 0.5).astype(int)
        cols = np.floor(sample['image'][2].numpy() + 0.5).astype(int)
        assert np.array_equal(sample['mask'].numpy(), original[rows, cols])
        # nearest neighbour: masks never get values between classes
        assert set(sample['mask'].unique().tolist()) <= set(range(6))


@pytest.mark.parametrize(
    ('size', 'scale', 'side'),
    [
        ((32, 32), (2.0, 2.0), 16),  # crop 16 -> 8: GSD doubles
        ((32, 32), (0.5, 0.5), 4),  # crop 4 -> 8: GSD halves
        ((12, 20), (2.0, 2.0), 12),  # crop clipped to the shorter side
        ((6, 6), (1.0, 1.0), 6),  # image smaller than the patch: upsampled
    ],
)
def test_crops_update_the_gsd(
    tmp_path: Path, size: tuple[int, int], scale: tuple[float, float], side: int
) -> None:
    write_folder(tmp_path, n=1, size=size)
    ds = SegmentationFolderGSD(tmp_path, gsd=0.3, patch_size=8, scale_range=scale)
    sample = ds[0]
    assert sample['image'].shape == (3, 8, 8)
    assert sample['mask'].shape == (8, 8)
    assert sample['gsd'].item() == pytest.approx(0.3 * side / 8)


def test_random_scale_range_gsd_matches_the_crop(tmp_path: Path) -> None:
    write_folder(tmp_path, n=1, size=(64, 64))
    ds = SegmentationFolderGSD(tmp_path, gsd=1.0, patch_size=16, scale_range=(0.5, 2))
    sides = set()
    for _ in range(40):
        sample = ds[0]
        side = sample['gsd'].item() * 16
        assert side == pytest.approx(round(side), abs=1e-4)
        assert 8 <= round(side) <= 32
        # the crop spans side pixels of the row coordinates
        rows = sample['image'][1]
        assert float(rows.max() - rows.min()) == pytest.approx(round(side) - 1, abs=1.5)
        sides.add(round(side))
    assert len(sides) > 5


def test_evaluation_resize_and_centre_crop(tmp_path: Path) -> None:
    write_folder(tmp_path, n=1, size=(20, 30))
    original = coded_pair((20, 30), seed=0)[1]
    resized = SegmentationFolderGSD(tmp_path, gsd=1.0, image_size=10)[0]
    assert resized['image'].shape == (3, 10, 10)
    assert resized['mask'].shape == (10, 10)
    assert resized['gsd'].item() == pytest.approx((20 * 30) ** 0.5 / 10)
    assert set(resized['mask'].unique().tolist()) <= set(range(6))
    crop = SegmentationFolderGSD(tmp_path, gsd=1.0, image_size=10, center_crop=True)[0]
    assert crop['gsd'].item() == 1.0
    assert torch.equal(crop['mask'], torch.from_numpy(original[5:15, 10:20]).long())
    check_aligned(crop, original)
    big = SegmentationFolderGSD(tmp_path, gsd=1.0, image_size=25, center_crop=True)
    with pytest.raises(ValueError, match=r"tile_00\.png' is 20 x 30 px, smaller"):
        big[0]


def test_jpeg_images(tmp_path: Path) -> None:
    write_folder(tmp_path, n=2, size=(16, 16), image_ext='.jpg')
    sample = SegmentationFolderGSD(tmp_path, gsd=1.0, num_classes=6)[0]
    assert sample['image'].shape == (3, 16, 16)
    assert torch.equal(sample['mask'], torch.from_numpy(coded_pair((16, 16))[1]).long())


def test_geotiff_pairs_read_the_gsd(tmp_path: Path) -> None:
    (tmp_path / 'images').mkdir()
    (tmp_path / 'masks').mkdir()
    image, mask = coded_pair((16, 12))
    write_tif(tmp_path / 'images' / 'a.tif', image.transpose(2, 0, 1), 'EPSG:32633')
    write_tif(tmp_path / 'masks' / 'a.tif', mask[None], 'EPSG:32633')
    ds = SegmentationFolderGSD(tmp_path, num_classes=6)
    sample = ds[0]
    assert sample['gsd'].item() == 0.25  # from the raster's resolution
    assert sample['image'].shape == (3, 16, 12)
    check_aligned(sample, mask)
    # a number overrides the raster
    assert SegmentationFolderGSD(tmp_path, gsd=2.0)[0]['gsd'].item() == 2.0


def test_geotiff_in_degrees_needs_a_gsd(tmp_path: Path) -> None:
    (tmp_path / 'images').mkdir()
    (tmp_path / 'masks').mkdir()
    image, mask = coded_pair((8, 8))
    write_tif(
        tmp_path / 'images' / 'a.tif', image.transpose(2, 0, 1), 'EPSG:4326', 1e-5
    )
    write_tif(tmp_path / 'masks' / 'a.tif', mask[None], 'EPSG:4326', 1e-5)
    with pytest.raises(ValueError, match=r"no GSD for '.*a\.tif'.*projected CRS"):
        SegmentationFolderGSD(tmp_path)[0]
    assert SegmentationFolderGSD(tmp_path, gsd=0.5)[0]['gsd'].item() == 0.5


def test_png_images_need_a_gsd(tmp_path: Path) -> None:
    write_folder(tmp_path, n=2)
    with pytest.raises(ValueError, match=r"no GSD for the images 'tile_00', 'tile_01'"):
        SegmentationFolderGSD(tmp_path)


def test_multiband_tiff_mask_is_an_error(tmp_path: Path) -> None:
    (tmp_path / 'images').mkdir()
    (tmp_path / 'masks').mkdir()
    image, mask = coded_pair((8, 8))
    write_tif(tmp_path / 'images' / 'a.tif', image.transpose(2, 0, 1), 'EPSG:32633')
    write_tif(tmp_path / 'masks' / 'a.tif', np.stack([mask, mask]), 'EPSG:32633')
    with pytest.raises(ValueError, match=r"mask '.*a\.tif' has 2 bands"):
        SegmentationFolderGSD(tmp_path)[0]


def test_gsd_csv_by_stem_and_by_path(tmp_path: Path) -> None:
    write_folder(tmp_path, n=3)
    csv = tmp_path / 'gsd.csv'
    csv.write_text('stem,gsd\ntile_00,0.3\ntile_02,1.5\n')
    with pytest.raises(ValueError, match=r"no GSD for the images 'tile_01'.*no row"):
        SegmentationFolderGSD(tmp_path, gsd=csv)
    csv.write_text('stem,gsd\ntile_00,0.3\ntile_01,0.6\ntile_02,1.5\n')
    ds = SegmentationFolderGSD(tmp_path, gsd=str(csv))
    assert [ds[i]['gsd'].item() for i in range(3)] == pytest.approx([0.3, 0.6, 1.5])
    paths = tmp_path / 'paths.csv'
    paths.write_text('path,gsd\ntile_00.png,0.3\nimages/tile_01.png,0.6\n')
    with pytest.raises(ValueError, match="'tile_02'"):
        SegmentationFolderGSD(tmp_path, gsd=paths)
    paths.write_text(
        'path,gsd\ntile_00.png,0.3\nimages/tile_01.png,0.6\ntile_02.png,2\n'
    )
    ds = SegmentationFolderGSD(tmp_path, gsd=paths)
    assert [ds[i]['gsd'].item() for i in range(3)] == pytest.approx([0.3, 0.6, 2.0])
    paths.write_text('path,gsd\nmasks/tile_00.png,0.3\n')
    with pytest.raises(ValueError, match=r"masks/tile_00\.png' is not an image"):
        SegmentationFolderGSD(tmp_path, gsd=paths)


@pytest.mark.parametrize(
    ('text', 'match'),
    [
        ('stem,gsd\ntile_00,1\ntile_09,2\n', r"line 3 \('tile_09'\): no image"),
        (
            'stem,gsd\ntile_00,1\ntile_00,2\n',
            r"line 3 \('tile_00'\): the stem 'tile_00' is listed twice \(first on",
        ),
        ('stem,gsd\ntile_00,0\n', 'positive'),
        ('stem,gsd\ntile_00,abc\n', "'abc' is not a number"),
        ('name,gsd\ntile_00,1\n', r'columns stem,gsd \(or path,gsd\)'),
        ('path,gsd\ntile_09.png,1\n', r"line 2 \('tile_09\.png'\): no such file"),
    ],
)
def test_bad_gsd_csv(tmp_path: Path, text: str, match: str) -> None:
    write_folder(tmp_path, n=1)
    (tmp_path / 'gsd.csv').write_text(text)
    with pytest.raises(ValueError, match=match):
        SegmentationFolderGSD(tmp_path, gsd=tmp_path / 'gsd.csv')


def test_mask_size_differs_from_image(tmp_path: Path) -> None:
    write_folder(tmp_path, n=2, size=(16, 16))
    Image.fromarray(np.zeros((16, 12), dtype=np.uint8)).save(
        tmp_path / 'masks' / 'tile_01.png'
    )
    ds = SegmentationFolderGSD(tmp_path, gsd=1.0)
    ds[0]
    with pytest.raises(
        ValueError,
        match=r"mask '.*tile_01\.png' is 16 x 12 px but its image '.*tile_01\.png' "
        r'is 16 x 16 px',
    ):
        ds[1]


def test_class_values_out_of_range(tmp_path: Path) -> None:
    write_folder(tmp_path, n=1, size=(8, 8))
    mask = np.zeros((8, 8), dtype=np.uint8)
    mask[0, 0] = 7
    mask[1, 1] = 255
    mask[2, 2] = 2
    Image.fromarray(mask).save(tmp_path / 'masks' / 'tile_00.png')
    with pytest.raises(
        ValueError,
        match=r"mask '.*tile_00\.png' holds class values \[7, 255\] outside 0\.\.2 "
        r'\(num_classes=3\)',
    ):
        SegmentationFolderGSD(tmp_path, gsd=1.0, num_classes=3)[0]
    with pytest.raises(
        ValueError, match=r'values \[7\] outside 0\.\.2 or ignore_index'
    ):
        SegmentationFolderGSD(tmp_path, gsd=1.0, num_classes=3, ignore_index=255)[0]
    sample = SegmentationFolderGSD(tmp_path, gsd=1.0, num_classes=8, ignore_index=255)[
        0
    ]
    assert sample['mask'][1, 1].item() == 255


def test_colour_mask_is_an_error(tmp_path: Path) -> None:
    write_folder(tmp_path, n=1, size=(8, 8))
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(
        tmp_path / 'masks' / 'tile_00.png'
    )
    with pytest.raises(ValueError, match=r"mask '.*tile_00\.png' is a RGB image"):
        SegmentationFolderGSD(tmp_path, gsd=1.0)[0]


def test_palette_mask_gives_indices(tmp_path: Path) -> None:
    write_folder(tmp_path, n=1, size=(8, 8))
    mask = Image.fromarray(np.full((8, 8), 3, dtype=np.uint8)).convert('P')
    mask.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] * 64)
    mask.save(tmp_path / 'masks' / 'tile_00.png')
    sample = SegmentationFolderGSD(tmp_path, gsd=1.0, num_classes=4)[0]
    assert torch.equal(sample['mask'], torch.full((8, 8), 3))


def test_missing_mask_and_missing_image(tmp_path: Path) -> None:
    write_folder(tmp_path, n=3)
    (tmp_path / 'masks' / 'tile_01.png').unlink()
    with pytest.raises(ValueError, match=r"no mask for the image stems 'tile_01'"):
        SegmentationFolderGSD(tmp_path, gsd=1.0)
    write_folder(tmp_path, n=3)
    (tmp_path / 'images' / 'tile_02.png').unlink()
    with pytest.raises(ValueError, match=r"no image for the mask stems 'tile_02'"):
        SegmentationFolderGSD(tmp_path, gsd=1.0)


def test_folder_layout_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"root '.*nowhere' is not a folder"):
        SegmentationFolderGSD(tmp_path / 'nowhere', gsd=1.0)
    with pytest.raises(ValueError, match=r'has no images/ folder'):
        SegmentationFolderGSD(tmp_path, gsd=1.0)
    (tmp_path / 'images').mkdir()
    with pytest.raises(ValueError, match=r'has no masks/ folder'):
        SegmentationFolderGSD(tmp_path, gsd=1.0)
    (tmp_path / 'masks').mkdir()
    (tmp_path / 'images' / '.DS_Store').write_text('hidden files are skipped')
    with pytest.raises(ValueError, match=r"no images in '.*images'"):
        SegmentationFolderGSD(tmp_path, gsd=1.0)


def test_unknown_extension_and_duplicate_stems(tmp_path: Path) -> None:
    write_folder(tmp_path, n=2)
    (tmp_path / 'images' / 'notes.txt').write_text('not an image')
    with pytest.raises(ValueError, match=r"unsupported file extension in 'notes\.txt'"):
        SegmentationFolderGSD(tmp_path, gsd=1.0)
    (tmp_path / 'images' / 'notes.txt').unlink()
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(
        tmp_path / 'masks' / 'tile_00.tif'
    )
    with pytest.raises(
        ValueError, match=r"'tile_00\.png' and 'tile_00\.tif' share the stem"
    ):
        SegmentationFolderGSD(tmp_path, gsd=1.0)


def test_truncated_files_name_the_file(tmp_path: Path) -> None:
    write_folder(tmp_path, n=2, size=(64, 64))
    buffer = io.BytesIO()
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(buffer, 'PNG')
    (tmp_path / 'images' / 'tile_00.png').write_bytes(buffer.getvalue()[:500])
    (tmp_path / 'masks' / 'tile_01.png').write_bytes(b'not a png')
    ds = SegmentationFolderGSD(tmp_path, gsd=1.0)
    with pytest.raises(OSError, match=r"cannot read the image '.*tile_00\.png'"):
        ds[0]
    with pytest.raises(OSError, match=r"cannot read the mask '.*tile_01\.png'"):
        ds[1]


def test_unknown_stems(tmp_path: Path) -> None:
    write_folder(tmp_path, n=2)
    ds = SegmentationFolderGSD(tmp_path, gsd=1.0, stems=['tile_01'])
    assert ds.stems == ['tile_01']
    with pytest.raises(ValueError, match=r"stems 'tile_07' not found"):
        SegmentationFolderGSD(tmp_path, gsd=1.0, stems=['tile_01', 'tile_07'])


@pytest.mark.parametrize(
    ('kwargs', 'error', 'match'),
    [
        ({'patch_size': 0}, ValueError, r'patch_size must be >= 1, got 0'),
        ({'image_size': 2.5}, TypeError, r'image_size must be None or an int'),
        ({'num_classes': 0}, ValueError, r'num_classes must be >= 1, got 0'),
        ({'ignore_index': 1.0}, TypeError, r'ignore_index must be None or an int'),
        ({'scale_range': (2.0, 1.0)}, ValueError, r'min <= max, got \(2\.0, 1\.0\)'),
        ({'scale_range': (0, 1)}, ValueError, r'scale_range must be a finite'),
        ({'flips': 1}, TypeError, r'flips must be True or False, got 1'),
        ({'center_crop': True}, ValueError, r'center_crop=True needs image_size'),
        ({'mode': 'XYZ'}, ValueError, r"PIL mode.*'XYZ'"),
        ({'gsd': -1.0}, ValueError, r'gsd: GSD must be a finite positive.*-1\.0'),
        ({'gsd': 'nope.csv'}, ValueError, r"gsd 'nope\.csv' is neither a number"),
        ({'gsd': [1.0]}, TypeError, r'gsd must be None, a number'),
    ],
)
def test_dataset_bad_arguments(
    tmp_path: Path, kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    write_folder(tmp_path, n=1)
    kwargs = {'gsd': 1.0, **kwargs}
    with pytest.raises(error, match=match):
        SegmentationFolderGSD(tmp_path, **kwargs)  # type: ignore[arg-type]


def test_datamodule_batches(tmp_path: Path) -> None:
    write_folder(tmp_path, n=10, size=(24, 24))
    dm = SegmentationFolderGSDDataModule(
        str(tmp_path),
        gsd=0.5,
        num_classes=6,
        patch_size=8,
        scale_range=(1.0, 1.0),  # plain crops: the red band still equals the mask
        batch_size=4,
        val_split_pct=0.2,
        test_split_pct=0.2,
    )
    dm.setup('fit')
    sizes = [len(d) for d in (dm.train_dataset, dm.val_dataset, dm.test_dataset)]  # type: ignore[arg-type]
    assert sizes == [6, 2, 2]
    batch = next(iter(dm.train_dataloader()))
    assert batch['image'].shape == (4, 3, 8, 8)
    assert batch['mask'].shape == (4, 8, 8)
    assert batch['gsd'].shape == (4,)
    batch = dm.aug(batch)  # what on_after_batch_transfer applies: (x - 0) / 255
    assert batch['image'].dtype == torch.float32
    assert 0 <= batch['image'].min() and batch['image'].max() <= 1
    assert batch['mask'].dtype == torch.int64
    assert batch['gsd'].dtype == torch.float32
    assert torch.equal(batch['image'][:, 0] * 255 / CODE, batch['mask'].float())
    assert torch.equal(batch['gsd'], torch.full((4,), 0.5))
    # validation: whole images at the native GSD
    val = next(iter(dm.val_dataloader()))
    assert val['image'].shape == (2, 3, 24, 24)
    assert torch.equal(val['gsd'], torch.full((2,), 0.5))


def test_percentage_splits_are_deterministic_and_disjoint(tmp_path: Path) -> None:
    stems = write_folder(tmp_path, n=20, size=(8, 8))

    def split(seed: int) -> tuple[list[str], list[str], list[str]]:
        dm = SegmentationFolderGSDDataModule(
            str(tmp_path), gsd=1.0, val_split_pct=0.2, test_split_pct=0.25, seed=seed
        )
        dm.setup('fit')
        return (
            dm.train_dataset.stems,  # type: ignore[union-attr]
            dm.val_dataset.stems,  # type: ignore[union-attr]
            dm.test_dataset.stems,  # type: ignore[union-attr]
        )

    train, val, test = split(0)
    assert (len(train), len(val), len(test)) == (11, 4, 5)
    assert sorted(train + val + test) == stems  # disjoint and complete
    assert split(0) == (train, val, test)
    assert split(1) != (train, val, test)


def test_split_files(tmp_path: Path) -> None:
    write_folder(tmp_path, n=6, size=(8, 8))
    (tmp_path / 'train.txt').write_text('tile_00\ntile_01\n\n# comment\ntile_02\n')
    (tmp_path / 'val.txt').write_text('tile_03\n')
    (tmp_path / 'test.txt').write_text('tile_05\ntile_04\n')
    dm = SegmentationFolderGSDDataModule(
        str(tmp_path),
        gsd=1.0,
        train_split='train.txt',  # relative to root
        val_split=str(tmp_path / 'val.txt'),
        test_split='test.txt',
    )
    dm.setup('fit')
    assert dm.train_dataset.stems == ['tile_00', 'tile_01', 'tile_02']  # type: ignore[union-attr]
    assert dm.val_dataset.stems == ['tile_03']  # type: ignore[union-attr]
    assert dm.test_dataset.stems == ['tile_05', 'tile_04']  # type: ignore[union-attr]
    # a split without a file is empty, and its data loader says so
    dm = SegmentationFolderGSDDataModule(
        str(tmp_path), gsd=1.0, train_split='train.txt'
    )
    dm.setup('fit')
    assert len(dm.val_dataset) == 0  # type: ignore[arg-type]
    with pytest.raises(Exception, match='val_dataset has length 0'):
        dm.val_dataloader()


@pytest.mark.parametrize(
    ('train', 'val', 'match'),
    [
        ('tile_00\ntile_09\n', 'tile_03\n', r"train\.txt', line 2: stem 'tile_09' not"),
        ('tile_00\ntile_00\n', 'tile_03\n', r"stem 'tile_00' is listed twice"),
        ('tile_00\ntile_03\n', 'tile_03\n', r"'tile_03' is in both train_split="),
        ('tile_00.png\n', 'tile_03\n', r"give the stem 'tile_00', without the ext"),
        ('# nothing\n', 'tile_03\n', r'lists no stem'),
    ],
)
def test_bad_split_files(tmp_path: Path, train: str, val: str, match: str) -> None:
    write_folder(tmp_path, n=4, size=(8, 8))
    (tmp_path / 'train.txt').write_text(train)
    (tmp_path / 'val.txt').write_text(val)
    dm = SegmentationFolderGSDDataModule(
        str(tmp_path), gsd=1.0, train_split='train.txt', val_split='val.txt'
    )
    with pytest.raises(ValueError, match=match):
        dm.setup('fit')


def test_missing_split_file(tmp_path: Path) -> None:
    write_folder(tmp_path, n=2, size=(8, 8))
    with pytest.raises(ValueError, match=r"split file 'absent\.txt' does not exist"):
        read_split_file('absent.txt', ['tile_00'], tmp_path)


def test_separate_test_root(tmp_path: Path) -> None:
    write_folder(tmp_path / 'train', n=5, size=(8, 8))
    write_folder(tmp_path / 'test', n=3, size=(12, 12))
    dm = SegmentationFolderGSDDataModule(
        str(tmp_path / 'train'),
        gsd=1.0,
        val_split_pct=0.2,
        test_split_pct=0.2,  # ignored: test_root is the test split
        test_root=str(tmp_path / 'test'),
        test_gsd=0.25,
    )
    dm.setup('test')
    assert len(dm.train_dataset) == 4  # type: ignore[arg-type]
    assert len(dm.val_dataset) == 1  # type: ignore[arg-type]
    assert len(dm.test_dataset) == 3  # type: ignore[arg-type]
    batch = next(iter(dm.test_dataloader()))
    assert batch['image'].shape == (3, 3, 12, 12)
    assert torch.equal(batch['gsd'], torch.full((3,), 0.25))
    # without test_gsd a numeric gsd serves the test folder too
    dm = SegmentationFolderGSDDataModule(
        str(tmp_path / 'train'), gsd=2.0, test_root=str(tmp_path / 'test')
    )
    dm.setup('test')
    assert dm.test_dataset[0]['gsd'].item() == 2.0  # type: ignore[index]


def test_different_sizes_need_image_size(tmp_path: Path) -> None:
    write_folder(tmp_path / 'a', n=2, size=(8, 8))
    write_folder(tmp_path / 'b', n=2, size=(12, 16))
    root = tmp_path / 'all'
    for part in ('images', 'masks'):
        (root / part).mkdir(parents=True)
        for i, folder in enumerate(('a', 'b')):
            for file in (tmp_path / folder / part).iterdir():
                file.rename(root / part / f'{folder}{i}_{file.name}')
    dm = SegmentationFolderGSDDataModule(
        str(root), gsd=1.0, val_split_pct=0.5, test_split_pct=0.0, seed=3
    )
    dm.setup('fit')
    if len({dm.val_dataset[i]['image'].shape for i in range(2)}) > 1:  # type: ignore[index]
        with pytest.raises(ValueError, match='pass image_size'):
            next(iter(dm.val_dataloader()))
    dm = SegmentationFolderGSDDataModule(
        str(root),
        gsd=1.0,
        patch_size=8,
        image_size=8,
        batch_size=2,
        val_split_pct=0.5,
        test_split_pct=0.0,
    )
    dm.setup('fit')
    assert next(iter(dm.train_dataloader()))['image'].shape == (2, 3, 8, 8)
    assert next(iter(dm.val_dataloader()))['mask'].shape == (2, 8, 8)


@pytest.mark.parametrize(
    ('kwargs', 'error', 'match'),
    [
        ({'val_split_pct': 0.6, 'test_split_pct': 0.4}, ValueError, r'must be < 1'),
        ({'val_split': 'val.txt'}, ValueError, r"val_split='val\.txt'.*need train"),
        ({'test_gsd': 0.5}, ValueError, r'test_gsd=0\.5 needs test_root'),
        (
            {'train_split': 'a', 'test_split': 'b', 'test_root': 'c'},
            ValueError,
            r"give test_root='c' or test_split='b'",
        ),
        ({'batch_size': 0}, ValueError, r'batch_size must be >= 1, got 0'),
        ({'eval_batch_size': 0}, ValueError, r'eval_batch_size must be >= 1'),
        ({'patch_size': -1}, ValueError, r'patch_size must be >= 1, got -1'),
        ({'scale_range': (3, 2)}, ValueError, r'min <= max'),
        ({'std': 0}, ValueError, r'std must be finite and positive'),
        ({'gsd': 'missing.csv'}, ValueError, r"'missing\.csv' is neither a number"),
        ({'train_split': 3}, TypeError, r'train_split must be None or a path'),
    ],
)
def test_datamodule_bad_arguments(
    tmp_path: Path, kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        SegmentationFolderGSDDataModule(str(tmp_path), **kwargs)  # type: ignore[arg-type]


def test_split_leaving_no_training_image(tmp_path: Path) -> None:
    write_folder(tmp_path, n=2, size=(8, 8))
    dm = SegmentationFolderGSDDataModule(
        str(tmp_path), gsd=1.0, val_split_pct=0.5, test_split_pct=0.4
    )
    with pytest.raises(ValueError, match=r'the 2 images .* leave no training image'):
        dm.setup('fit')


def test_plot(tmp_path: Path) -> None:
    write_folder(tmp_path, n=4, size=(8, 8))
    dm = SegmentationFolderGSDDataModule(
        str(tmp_path), gsd=0.5, num_classes=6, val_split_pct=0.25
    )
    dm.setup('fit')
    sample = dm.val_dataset[0]  # type: ignore[index]
    sample['prediction'] = sample['mask'].flip(0)
    fig = dm.plot(sample)  # TorchGeo's BaseDataModule.plot -> dataset.plot
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 3
    assert fig.get_suptitle() == 'GSD 0.5 m/px'
    assert [ax.get_title() for ax in fig.axes] == ['Image', 'Mask', 'Prediction']
    del sample['prediction']
    fig = dm.plot(sample)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2
    with pytest.raises(ValueError, match=r"plot needs sample\['mask'\]"):
        dm.plot({'image': sample['image']})


def test_semantic_segmentation_task_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TorchGeo's own task trains, validates (plotting) and tests on these batches."""
    from lightning.pytorch import Trainer
    from torchgeo.tasks import SemanticSegmentation

    write_folder(tmp_path, n=6, size=(16, 16))
    dm = SegmentationFolderGSDDataModule(
        str(tmp_path), gsd=0.5, num_classes=6, patch_size=16, batch_size=2
    )
    figures: list[object] = []
    plot = dm.plot

    def spy(*args: object, **kwargs: object) -> Figure | None:
        figure = plot(*args, **kwargs)
        figures.append(figure)
        return figure

    monkeypatch.setattr(dm, 'plot', spy)
    task = SemanticSegmentation(
        model='fcn', backbone='resnet18', num_classes=6, num_filters=4
    )
    trainer = Trainer(
        accelerator='cpu',
        fast_dev_run=True,  # its dummy logger makes the task call datamodule.plot
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(task, datamodule=dm)
    assert figures and all(isinstance(f, Figure) for f in figures)
    assert len(figures[0].axes) == 3  # type: ignore[attr-defined]
    metrics = trainer.test(task, datamodule=dm, verbose=False)
    assert metrics and 'test_loss' in metrics[0]


@pytest.mark.shared
def test_xiamen_buildings_with_split_files() -> None:
    root = shared_path('data', 'xiamen_buildings')
    dm = SegmentationFolderGSDDataModule(
        str(root),
        gsd=0.54,
        num_classes=2,
        patch_size=64,
        batch_size=2,
        train_split='training.txt',
        val_split='validation.txt',
        test_split='evaluation.txt',
    )
    dm.setup('fit')
    sizes = (len(dm.train_dataset), len(dm.val_dataset), len(dm.test_dataset))  # type: ignore[arg-type]
    assert sizes == (560, 74, 73)
    train = dm.train_dataset
    assert isinstance(train, SegmentationFolderGSD)
    for index in range(3):
        sample = train[index]
        assert sample['image'].shape == (3, 64, 64)
        assert set(sample['mask'].unique().tolist()) <= {0, 1}
        side = sample['gsd'].item() / 0.54 * 64
        assert side == pytest.approx(round(side), abs=1e-3)
        assert 32 <= round(side) <= 128
    batch = dm.aug(next(iter(dm.val_dataloader())))
    assert batch['image'].shape == (2, 3, 256, 256)
    assert batch['mask'].dtype == torch.int64
    assert 0 <= batch['image'].min() and batch['image'].max() <= 1
    assert torch.allclose(batch['gsd'], torch.full((2,), 0.54))


@pytest.mark.shared
def test_dubai_landcover_images_of_different_sizes() -> None:
    root = shared_path('data', 'dubai_landcover')
    # the source documents no GSD: a nominal 1 m per pixel
    dm = SegmentationFolderGSDDataModule(
        str(root),
        gsd=1.0,
        num_classes=6,
        patch_size=64,
        image_size=128,
        batch_size=2,
        seed=0,
    )
    dm.setup('fit')
    assert len(dm.train_dataset) + len(dm.val_dataset) + len(dm.test_dataset) == 72  # type: ignore[arg-type]
    val = dm.val_dataset
    assert isinstance(val, SegmentationFolderGSD)
    shapes = set()
    for index in range(2):
        image, mask, _ = val.load(index)
        shapes.add(tuple(image.shape))
        assert mask.shape == image.shape[-2:]
        assert int(mask.max()) <= 5
        sample = val[index]
        height, width = image.shape[-2:]
        assert sample['image'].shape == (3, 128, 128)
        assert sample['gsd'].item() == pytest.approx((height * width) ** 0.5 / 128)
    batch = next(iter(dm.train_dataloader()))
    assert batch['image'].shape == (2, 3, 64, 64)
    assert batch['mask'].shape == (2, 64, 64)
    assert set(batch['mask'].unique().tolist()) <= set(range(6))


@pytest.mark.shared
def test_data_guide_example_runs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.test_gsd import python_blocks

    monkeypatch.chdir(shared_path('data'))  # the example's 'xiamen_buildings'
    page = Path(__file__).resolve().parents[2] / 'docs' / 'user' / 'data.rst'
    blocks = python_blocks(page.read_text())
    assert len(blocks) == 1
    exec(compile(blocks[0], str(page), 'exec'), {})  # noqa: S102
    out = capsys.readouterr().out
    # the output the page shows in its comment
    assert (
        'torch.Size([8, 3, 224, 224]) torch.Size([8, 224, 224]) torch.Size([8])' in out
    )
