"""Loaders against files the tests write in each official format; the cache; strictness; real Fashion-MNIST."""

from __future__ import annotations

import gzip
import io
import json
import pickle
import shutil
import struct
import tarfile
import time
import warnings
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gloro.data import (
    ChecksumError,
    CorruptDataError,
    DatasetUnavailableError,
    Split,
    Subset,
    UnverifiedDataWarning,
    dataset_spec,
    datasets,
    load_dataset,
    load_digits,
    prepare_dataset,
    register_dataset,
    registry,
    to_unit_interval,
)
from gloro.data.__main__ import main as data_main

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
IDX_NAMES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


# ---------------------------------------------------------------- writers of the official formats


def idx_bytes(array: np.ndarray) -> bytes:
    """LeCun's IDX: two zero bytes, type 0x08 (unsigned byte), ndim, big-endian uint32 dims, then the data."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx_set(folder: Path, sizes: dict[str, int], gz: bool, seed: int = 0) -> dict[str, tuple]:
    """The four IDX files of an MNIST-like set; returns {split: (images (N, 28, 28), labels)}."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for split, n in sizes.items():
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        images[0, 0, 0], images[0, 0, 1] = 0, 255  # the extremes, so [0, 1] is reached exactly
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        for name, array in zip(IDX_NAMES[split], (images, labels)):
            data = idx_bytes(array)
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (folder / name).write_bytes(data)
        written[split] = (images, labels)
    return written


def cifar_batch(images: np.ndarray, labels: np.ndarray, label_key: bytes) -> bytes:
    """A CIFAR "python version" batch: a protocol-2 pickle of a dict with bytes keys, as the official ones."""
    batch = {
        b"batch_label": b"testing batch 1 of 1",
        label_key: [int(label) for label in labels],
        b"data": images.reshape(len(images), -1),
        b"filenames": [f"image_{i}.png".encode() for i in range(len(images))],
    }
    return pickle.dumps(batch, protocol=2)


def write_cifar(folder: Path, dataset: str, sizes: dict[str, int], seed: int = 0) -> dict[str, tuple]:
    """Batch files in `folder` as the official tree lays them out; returns {split: (images, labels)}."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    if dataset == "cifar10":
        names = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
        key, classes = b"labels", [f"class{i}".encode() for i in range(10)]
        (folder / "batches.meta").write_bytes(
            pickle.dumps({b"label_names": classes, b"num_cases_per_batch": 3, b"num_vis": 3072}, protocol=2)
        )
    else:
        names = {"train": ["train"], "test": ["test"]}
        key, classes = b"fine_labels", [f"fine{i}".encode() for i in range(100)]
        meta = {b"fine_label_names": classes, b"coarse_label_names": [f"c{i}".encode() for i in range(20)]}
        (folder / "meta").write_bytes(pickle.dumps(meta, protocol=2))
    written = {}
    for split, n in sizes.items():
        per_file = []
        for name in names[split]:
            images = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
            labels = rng.integers(0, len(classes), size=n)
            (folder / name).write_bytes(cifar_batch(images, labels, key))
            per_file.append((images, labels))
        written[split] = (np.concatenate([p[0] for p in per_file]), np.concatenate([p[1] for p in per_file]))
    return written


def tar_folder(folder: Path, archive: Path, arcname: str) -> None:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=arcname)


WNIDS = ["n03000000", "n01000000", "n02000000"]  # written unsorted: classes must come out sorted


def jpeg(pixels: np.ndarray, mode: str = "RGB") -> bytes:
    stream = io.BytesIO()
    Image.fromarray(pixels, mode=mode).save(stream, format="JPEG", quality=95, subsampling=0)
    return stream.getvalue()


def write_tiny(root: Path, per_class: int = 2, seed: int = 0) -> dict:
    """A small official-layout tree: wnids.txt, train/<wnid>/images/*.JPEG, val/images + val_annotations.txt.

    Images are smooth (a colour per class plus a gentle ramp) so JPEG keeps them close to the written pixels.
    One validation image is greyscale. Returns the written pixels and labels, keyed by relative path.
    """
    rng = np.random.default_rng(seed)
    (root / "val" / "images").mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    ramp = np.add.outer(np.arange(64), np.arange(64)).astype(np.int64) // 4
    written = {}
    sorted_wnids = sorted(WNIDS)

    def image(label: int) -> np.ndarray:
        base = np.array([40 + 70 * label, 200 - 60 * label, 90], dtype=np.int64) + rng.integers(-20, 20, size=3)
        return np.clip(base[None, None, :] + ramp[:, :, None], 0, 255).astype(np.uint8)

    for wnid in WNIDS:
        folder = root / "train" / wnid / "images"
        folder.mkdir(parents=True)
        for k in range(per_class):
            pixels = image(sorted_wnids.index(wnid))
            (folder / f"{wnid}_{k}.JPEG").write_bytes(jpeg(pixels))
            written[f"train/{wnid}/images/{wnid}_{k}.JPEG"] = (pixels, sorted_wnids.index(wnid))
    lines = []
    for k in range(11):  # val_10 sorts after val_9 only with a natural sort
        wnid = WNIDS[k % 3]
        label = sorted_wnids.index(wnid)
        pixels = image(label)
        if k == 4:
            grey = pixels[:, :, 1]
            (root / "val" / "images" / f"val_{k}.JPEG").write_bytes(jpeg(grey, mode="L"))
            pixels = np.repeat(grey[:, :, None], 3, axis=2)
        else:
            (root / "val" / "images" / f"val_{k}.JPEG").write_bytes(jpeg(pixels))
        written[f"val/images/val_{k}.JPEG"] = (pixels, label)
        lines.append(f"val_{k}.JPEG\t{wnid}\t0\t0\t63\t63")
    (root / "val" / "val_annotations.txt").write_text("\n".join(reversed(lines)) + "\n")
    return written


def load(name: str, split: str, tmp_path: Path, **options) -> Split:
    """load_dataset on test files: not strict, no download, no progress, a private cache; warnings muted."""
    options = {"data_dir": tmp_path / "data", "cache_dir": tmp_path / "cache", **options}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnverifiedDataWarning)
        return load_dataset(name, split, download=False, strict=False, progress=False, **options)


def decoded(path: Path) -> np.ndarray:
    """What PIL makes of a written JPEG, as (3, H, W): the reference the loader must reproduce exactly."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB")).transpose(2, 0, 1)


# ---------------------------------------------------------------- registry


def test_registry_names_the_papers_data_sets_and_digits():
    assert set(datasets()) == {"mnist", "fashion-mnist", "cifar10", "cifar100", "tiny-imagenet", "digits"}
    assert dataset_spec("cifar10").shape == (3, 32, 32)
    assert dataset_spec("tiny-imagenet").sizes == {"train": 100000, "test": 10000}


def test_unknown_name_and_split_raise_with_the_choices(tmp_path):
    with pytest.raises(ValueError, match=r"unknown data set 'svhn'.*mnist.*tiny-imagenet.*digits"):
        load_dataset("svhn", "train", cache_dir=tmp_path)
    with pytest.raises(ValueError, match=r"split must be one of \('train', 'test'\)"):
        load_dataset("digits", "val", cache_dir=tmp_path)


PLUGIN_DATA_SET = """
from dataclasses import replace

from gloro.data import dataset_spec, register_dataset
from gloro.data import digits


def read(location, split, progress):
    raw = digits.read_split(split)
    return replace(raw, images=16 - raw.images)


register_dataset(replace(dataset_spec("digits"), name="digits-inverted", description="16 - each pixel", read=read))
"""


def test_a_plugins_data_set_is_prepared_and_loaded_by_name_and_a_taken_name_is_refused(tmp_path, monkeypatch):
    """What a config's plugin does: register a spec (here the digits, inverted); the pipeline's prepare_data
    command imports it and caches the splits, and it then loads and is named by an experiment like the others."""
    from gloro.bench.experiment import Experiment
    from gloro.data import registry

    monkeypatch.setattr(registry, "DATASETS", dict(registry.DATASETS))  # the registration ends with the test
    plugin = tmp_path / "inverted_digits.py"
    plugin.write_text(PLUGIN_DATA_SET)
    cache = str(tmp_path / "cache")
    assert data_main(["prepare", "digits-inverted", "--plugin", str(plugin), "--cache-dir", cache, "--quiet"]) == 0
    assert "digits-inverted" in datasets()
    inverted = load_dataset("digits-inverted", "test", cache_dir=cache, download=False, progress=False)
    plain = load_dataset("digits", "test", cache_dir=cache, progress=False)
    assert torch.equal(inverted.images, 16 - plain.images) and torch.equal(inverted.labels, plain.labels)
    settings = {"dataset": "digits-inverted", "architecture": "2C2F", "train_epsilon": 0.3, "eval_epsilon": 0.3}
    assert Experiment.from_config("inverted", {**settings, "epochs": 1}).dataset == "digits-inverted"
    with pytest.raises(ValueError, match="a data set named 'digits' is already registered"):
        register_dataset(replace(dataset_spec("digits"), description="another"))


# ---------------------------------------------------------------- digits


@pytest.mark.parametrize("split", ["train", "test"])
def test_digits_load_offline_and_equal_load_digits(tmp_path, split):
    data = load_dataset("digits", split, cache_dir=tmp_path, download=False, progress=False)
    images, labels = load_digits(split)
    assert data.images.dtype == torch.uint8 and data.images.shape == (len(labels), 1, 8, 8)
    assert data.divisor == 16.0 and data.class_names == tuple("0123456789")
    assert torch.equal(data.float_images(), images) and torch.equal(data.labels, labels)
    assert data.sources[0]["checksum"] == "unpublished" and "scikit-learn" in data.sources[0]["package"]
    assert Path(data.cache_file).is_file()


# ---------------------------------------------------------------- MNIST and Fashion-MNIST (IDX)


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
@pytest.mark.parametrize("gz", [True, False], ids=["gzipped", "raw"])
def test_idx_files_load_with_exact_pixels_and_labels(tmp_path, name, gz):
    written = write_idx_set(tmp_path / "data", {"train": 7, "test": 3}, gz)
    for split, (images, labels) in written.items():
        data = load(name, split, tmp_path)
        assert data.images.dtype == torch.uint8 and data.images.shape == (len(labels), 1, 28, 28)
        assert np.array_equal(data.images[:, 0].numpy(), images)
        assert data.labels.dtype == torch.int64 and data.labels.tolist() == labels.tolist()
        floats = data.float_images()
        assert floats.dtype == torch.float32 and floats.min() == 0.0 and floats.max() == 1.0
        assert torch.equal(floats * 255, data.images.float())  # only x/255: no mean/std normalisation
        assert len(data.class_names) == 10 and data.divisor == 255.0


def test_idx_files_in_a_subfolder_named_after_the_data_set(tmp_path):
    written = write_idx_set(tmp_path / "data" / "fashion-mnist", {"test": 4}, gz=True)
    data = load("fashion-mnist", "test", tmp_path)
    assert data.labels.tolist() == written["test"][1].tolist()
    assert data.class_names[0] == "T-shirt/top" and data.class_names[9] == "Ankle boot"


def test_files_that_differ_from_the_release_warn_and_are_recorded(tmp_path):
    write_idx_set(tmp_path / "data", {"test": 3}, gz=True)
    published = r"t10k-images-idx3-ubyte\.gz: md5 .* published 9fb629c4189551a2d022fa330f9573f3"
    with pytest.warns(UnverifiedDataWarning, match=published):
        data = load_dataset(
            "mnist", "test", data_dir=tmp_path / "data", cache_dir=tmp_path, strict=False, download=False
        )
    assert {s["checksum"] for s in data.sources} == {"mismatch"}
    assert data.sources[0]["published_md5"]["t10k-images-idx3-ubyte.gz"] == "9fb629c4189551a2d022fa330f9573f3"


def test_strict_loading_rejects_files_whose_checksums_differ(tmp_path):
    write_idx_set(tmp_path / "data", {"train": 5}, gz=False)
    with pytest.raises(ChecksumError) as caught:
        load_dataset("mnist", "train", data_dir=tmp_path / "data", cache_dir=tmp_path, download=False)
    message = str(caught.value)
    assert str(tmp_path / "data" / "train-images-idx3-ubyte") in message
    assert "6bbc9ace898e44ae57da46a324031adb" in message and "strict=False" in message


@pytest.mark.parametrize("gz", [True, False], ids=["gzipped", "raw"])
def test_truncated_idx_file_names_the_file(tmp_path, gz):
    write_idx_set(tmp_path / "data", {"train": 6}, gz)
    path = tmp_path / "data" / ("train-images-idx3-ubyte" + (".gz" if gz else ""))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    expected = "truncated or corrupt gzip stream" if gz else r"truncated: header promises 4704 data bytes"
    with pytest.raises(CorruptDataError, match=expected) as caught:
        load("mnist", "train", tmp_path)
    assert str(path) in str(caught.value)
    assert not (tmp_path / "cache" / "mnist-train.pt").exists()  # nothing cached from a bad source


def test_idx_labels_given_as_images_are_refused_by_magic_number(tmp_path):
    write_idx_set(tmp_path / "data", {"test": 3}, gz=False)
    labels = tmp_path / "data" / "t10k-labels-idx1-ubyte"
    shutil.copy(labels, tmp_path / "data" / "t10k-images-idx3-ubyte")
    with pytest.raises(CorruptDataError, match=r"t10k-images-idx3-ubyte: magic number 0x00000801, expected .*3 dim"):
        load("mnist", "test", tmp_path)


def test_idx_label_count_must_match_images(tmp_path):
    write_idx_set(tmp_path / "data", {"test": 3}, gz=False)
    (tmp_path / "data" / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(2, np.uint8)))
    with pytest.raises(CorruptDataError, match=r"t10k-labels-idx1-ubyte: 2 labels for the 3 images"):
        load("mnist", "test", tmp_path)


def test_idx_labels_out_of_range_are_refused(tmp_path):
    write_idx_set(tmp_path / "data", {"test": 3}, gz=False)
    (tmp_path / "data" / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.array([1, 10, 2], np.uint8)))
    with pytest.raises(CorruptDataError, match=r"label 10 found, expected labels 0\.\.9"):
        load("mnist", "test", tmp_path)


# ---------------------------------------------------------------- CIFAR


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
@pytest.mark.parametrize("packed", [False, True], ids=["batches", "tar.gz"])
def test_cifar_batches_load_with_exact_pixels_labels_and_class_names(tmp_path, dataset, packed):
    folder_name = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}[dataset]
    archive_name = {"cifar10": "cifar-10-python.tar.gz", "cifar100": "cifar-100-python.tar.gz"}[dataset]
    written = write_cifar(tmp_path / "unpacked" / folder_name, dataset, {"train": 4, "test": 3})
    if packed:
        (tmp_path / "data").mkdir()
        tar_folder(tmp_path / "unpacked" / folder_name, tmp_path / "data" / archive_name, folder_name)
    else:
        shutil.move(tmp_path / "unpacked", tmp_path / "data")
    for split, (images, labels) in written.items():
        data = load(dataset, split, tmp_path)
        assert data.images.shape == images.shape == (len(labels), 3, 32, 32)
        assert np.array_equal(data.images.numpy(), images)
        assert data.labels.tolist() == labels.tolist()
        assert data.class_names[:2] == (("class0", "class1") if dataset == "cifar10" else ("fine0", "fine1"))
        assert len(data.class_names) == dataset_spec(dataset).num_classes
        floats = data.float_images()
        assert float(floats.min()) >= 0.0 and float(floats.max()) <= 1.0
    if packed:
        assert any(source["file"].endswith(archive_name) for source in data.sources)


def test_cifar10_train_concatenates_the_five_batches_in_order(tmp_path):
    written = write_cifar(tmp_path / "data" / "cifar-10-batches-py", "cifar10", {"train": 2})
    data = load("cifar10", "train", tmp_path)
    assert len(data) == 10 and np.array_equal(data.images.numpy(), written["train"][0])


def test_truncated_cifar_archive_names_the_archive(tmp_path):
    write_cifar(tmp_path / "unpacked" / "cifar-10-batches-py", "cifar10", {"train": 3, "test": 3})
    archive = tmp_path / "data" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    tar_folder(tmp_path / "unpacked" / "cifar-10-batches-py", archive, "cifar-10-batches-py")
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size * 2 // 3])
    with pytest.raises(CorruptDataError, match=r"truncated or corrupt archive .*expected the official") as caught:
        load("cifar10", "train", tmp_path)
    assert str(archive) in str(caught.value)


def test_a_pickle_that_is_not_a_batch_cannot_run_code(tmp_path):
    write_cifar(tmp_path / "data", "cifar10", {"test": 2})
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    (tmp_path / "data" / "test_batch").write_bytes(pickle.dumps({b"data": Payload()}, protocol=2))
    with pytest.raises(CorruptDataError, match=r"test_batch: not a CIFAR python batch \(UnpicklingError: refusing"):
        load("cifar10", "test", tmp_path)
    assert not marker.exists()
    pickle.loads((tmp_path / "data" / "test_batch").read_bytes())  # a plain unpickler would have run it
    assert marker.exists()


def test_cifar_batch_with_wrong_image_size_is_refused(tmp_path):
    write_cifar(tmp_path / "data", "cifar10", {"test": 2})
    wrong = np.zeros((2, 3, 28, 28), np.uint8)
    (tmp_path / "data" / "test_batch").write_bytes(cifar_batch(wrong, np.array([0, 1]), b"labels"))
    with pytest.raises(CorruptDataError, match=r"test_batch: 'data' is uint8 array of shape \(2, 2352\), expected"):
        load("cifar10", "test", tmp_path)


# ---------------------------------------------------------------- Tiny-ImageNet


@pytest.mark.parametrize("packed", [False, True], ids=["tree", "zip"])
def test_tiny_imagenet_tree_and_zip_load_labels_from_the_official_files(tmp_path, packed):
    root = tmp_path / "unpacked" / "tiny-imagenet-200"
    written = write_tiny(root)
    if packed:
        (tmp_path / "data").mkdir()
        with zipfile.ZipFile(tmp_path / "data" / "tiny-imagenet-200.zip", "w") as archive:
            for path in sorted(root.rglob("*")):
                archive.write(path, path.relative_to(root.parent).as_posix())
    else:
        shutil.move(tmp_path / "unpacked", tmp_path / "data")
        root = tmp_path / "data" / "tiny-imagenet-200"
    train, test = load("tiny-imagenet", "train", tmp_path), load("tiny-imagenet", "test", tmp_path)
    assert train.class_names == tuple(sorted(WNIDS)) and train.num_classes == 3
    assert train.images.shape == (6, 3, 64, 64) and test.images.shape == (11, 3, 64, 64)
    expected_train = sorted((k for k in written if k.startswith("train/")), key=lambda k: (written[k][1], k))
    expected_test = [f"val/images/val_{k}.JPEG" for k in range(11)]  # natural order: val_10 last
    for data, keys in ((train, expected_train), (test, expected_test)):
        assert data.labels.tolist() == [written[key][1] for key in keys]
        for i, key in enumerate(keys):
            reference = decoded(tmp_path / "unpacked" / "tiny-imagenet-200" / key) if packed else decoded(root / key)
            assert np.array_equal(data.images[i].numpy(), reference)  # exactly what PIL decodes
            error = np.abs(data.images[i].numpy().astype(int) - written[key][0].transpose(2, 0, 1)).mean()
            assert error < 3.0  # and close to the pixels written (JPEG is lossy)
    grey = test.images[4]
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])  # greyscale became RGB


def test_tiny_imagenet_corrupt_jpeg_names_the_file(tmp_path):
    root = tmp_path / "data" / "tiny-imagenet-200"
    write_tiny(root)
    bad = root / "val" / "images" / "val_3.JPEG"
    bad.write_bytes(bad.read_bytes()[:200])
    with pytest.raises(CorruptDataError, match=r"val_3\.JPEG: not a readable JPEG") as caught:
        load("tiny-imagenet", "test", tmp_path)
    assert str(bad) in str(caught.value)


def test_tiny_imagenet_annotation_with_unknown_wnid_names_the_line(tmp_path):
    root = tmp_path / "data" / "tiny-imagenet-200"
    write_tiny(root)
    annotations = root / "val" / "val_annotations.txt"
    annotations.write_text(annotations.read_text() + "val_0.JPEG\tn09999999\t0\t0\t1\t1\n")
    with pytest.raises(CorruptDataError, match=r"val_annotations\.txt, line 12: .*n09999999"):
        load("tiny-imagenet", "test", tmp_path)


def test_strict_loading_requires_the_official_size_when_no_checksum_is_published(tmp_path):
    write_tiny(tmp_path / "data" / "tiny-imagenet-200")
    with pytest.raises(CorruptDataError, match=r"11 test examples in 3 classes; the official tiny-imagenet has 10000"):
        load_dataset("tiny-imagenet", "test", data_dir=tmp_path / "data", cache_dir=tmp_path, progress=False)


# ---------------------------------------------------------------- cache


def test_cache_holds_uint8_labels_and_metadata_and_serves_the_next_load(tmp_path, monkeypatch):
    write_idx_set(tmp_path / "data", {"test": 5}, gz=True)
    first = load("mnist", "test", tmp_path)
    payload = torch.load(first.cache_file, weights_only=True)
    assert payload["images"].dtype == torch.uint8 and payload["labels"].dtype == torch.int64
    meta = payload["meta"]
    assert meta["class_names"] == list("0123456789") and meta["official"] is False
    assert [Path(s["file"]).name for s in meta["sources"]] == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]

    def refuse(*args):
        raise AssertionError("the sources were read again although the cache is current")

    monkeypatch.setitem(registry.DATASETS, "mnist", replace(registry.DATASETS["mnist"], read=refuse))
    second = load("mnist", "test", tmp_path)
    assert torch.equal(second.images, first.images) and second.sources == first.sources


def test_cache_is_rebuilt_when_the_source_changes(tmp_path):
    write_idx_set(tmp_path / "data", {"test": 5}, gz=False)
    first = load("mnist", "test", tmp_path)
    labels = np.array([9, 8, 7, 6, 5], np.uint8)
    (tmp_path / "data" / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(labels))
    assert first.labels.tolist() != labels.tolist()
    assert load("mnist", "test", tmp_path).labels.tolist() == labels.tolist()


def test_corrupt_cache_is_reported_and_rebuilt(tmp_path):
    written = write_idx_set(tmp_path / "data", {"test": 5}, gz=False)
    cache_file = Path(load("mnist", "test", tmp_path).cache_file)
    cache_file.write_bytes(cache_file.read_bytes()[:1000])
    with pytest.warns(UserWarning, match=r"mnist-test\.pt: unusable cache"):
        data = load("mnist", "test", tmp_path)
    assert data.labels.tolist() == written["test"][1].tolist()
    assert torch.load(cache_file, weights_only=True)["labels"].tolist() == data.labels.tolist()


def test_cache_stands_alone_once_the_sources_are_gone(tmp_path):
    written = write_idx_set(tmp_path / "data", {"test": 5}, gz=True)
    load("mnist", "test", tmp_path)
    shutil.rmtree(tmp_path / "data")
    assert load("mnist", "test", tmp_path).labels.tolist() == written["test"][1].tolist()


def test_strict_load_never_serves_a_cache_of_unofficial_files(tmp_path):
    write_idx_set(tmp_path / "data", {"test": 5}, gz=True)
    load("mnist", "test", tmp_path)
    with pytest.raises(ChecksumError):
        load_dataset("mnist", "test", data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", download=False)


def test_no_source_and_no_download_names_the_folders_and_files(tmp_path):
    with pytest.raises(DatasetUnavailableError) as caught:
        load_dataset("cifar10", "train", data_dir=tmp_path / "mine", cache_dir=tmp_path / "cache", download=False)
    message = str(caught.value)
    assert "downloading is off" in message and str(tmp_path / "mine") in message
    assert "cifar-10-python.tar.gz" in message and str(tmp_path / "cache" / "downloads" / "cifar10") in message


# ---------------------------------------------------------------- subsets and scaling


def test_subsets_first_n_and_seeded_sample_are_recorded(tmp_path):
    written = write_idx_set(tmp_path / "data", {"train": 20}, gz=False)
    first = load("mnist", "train", tmp_path, subset=5)
    assert first.labels.tolist() == written["train"][1][:5].tolist() and first.subset == "first 5 of 20"
    sample = load("mnist", "train", tmp_path, subset={"size": 6, "seed": 3})
    again = load("mnist", "train", tmp_path, subset=Subset(6, seed=3))
    other = load("mnist", "train", tmp_path, subset=Subset(6, seed=4))
    assert torch.equal(sample.images, again.images) and not torch.equal(sample.images, other.images)
    assert sample.subset.startswith("6 of 20, sampled with seed 3") and sample.metadata()["subset"] == sample.subset
    index = Subset(6, seed=3).indices(20)
    assert torch.equal(sample.labels, torch.from_numpy(written["train"][1][index.numpy()].astype(np.int64)))
    with pytest.raises(ValueError, match="subset of 21 examples asked for, the split has only 20"):
        load("mnist", "train", tmp_path, subset=21)


def test_to_unit_interval_divides_and_nothing_else():
    pixels = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(to_unit_interval(pixels, 255.0), torch.arange(256, dtype=torch.float32) / 255.0)


def test_metadata_is_json_serialisable(tmp_path):
    data = load_dataset("digits", "test", cache_dir=tmp_path, progress=False, subset=10)
    described = json.loads(json.dumps(data.metadata()))
    assert described["examples"] == 10 and described["input_divisor"] == 16.0 and described["subset"]


def test_command_line_prepares_and_lists(tmp_path, capsys):
    assert data_main(["prepare", "digits", "--cache-dir", str(tmp_path), "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["train"]["examples"] == 1437 and (tmp_path / "digits-test.pt").is_file()
    assert data_main(["prepare", "cifar10", "--cache-dir", str(tmp_path), "--no-download"]) == 1
    assert "cifar10 (train) is not available" in capsys.readouterr().err
    assert data_main(["list"]) == 0 and "tiny-imagenet" in capsys.readouterr().out


# ---------------------------------------------------------------- real data: Debian's Fashion-MNIST

needs_debian_fashion = pytest.mark.skipif(
    not (DEBIAN_FASHION / "train-images-idx3-ubyte.gz").is_file(),
    reason=f"Debian's dataset-fashion-mnist is not installed ({DEBIAN_FASHION} absent); "
    "`apt-get install dataset-fashion-mnist` provides it",
)


@needs_debian_fashion
def test_fashion_mnist_loads_from_the_debian_package_and_verifies(tmp_path):
    splits = prepare_dataset("fashion-mnist", cache_dir=tmp_path, download=False, progress=False)
    train, test = splits["train"], splits["test"]
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert train.labels.bincount().tolist() == [6000] * 10 and test.labels.bincount().tolist() == [1000] * 10
    assert train.labels[:6].tolist() == [9, 0, 0, 3, 0, 2]  # the published first labels: ankle boot, T-shirt, ...
    assert train.location == str(DEBIAN_FASHION.resolve())
    assert all(source["checksum"] == "verified" for source in train.sources + test.sources)
    start = time.perf_counter()
    cached = load_dataset("fashion-mnist", "train", cache_dir=tmp_path, download=False, progress=False)
    assert time.perf_counter() - start < 5.0 and torch.equal(cached.images, train.images)


@needs_debian_fashion
def test_fashion_mnist_files_given_as_mnist_are_recognised(tmp_path):
    shutil.copytree(DEBIAN_FASHION, tmp_path / "data")
    with pytest.raises(CorruptDataError, match=r"is fashion-mnist's official t10k-images-idx3-ubyte, not mnist's"):
        load_dataset("mnist", "test", data_dir=tmp_path / "data", cache_dir=tmp_path, strict=False, progress=False)
