"""Where each data set is looked for, and the one cached file per data set and split: loading, checking, caching.

Sources, in order: (1) a local folder the user names (`data_dir`, or its sub-folder named after the data
set) holding the official files; (2) a system copy (Debian's Fashion-MNIST); (3) the official files
downloaded earlier into `<cache_dir>/downloads/<name>/`, else downloaded there now, checked against the
published checksums. Preparation writes `<cache_dir>/<name>-<split>.pt`: uint8 images, int64 labels and
metadata (class names, the sources' checksums, the source's fingerprint), so the next load takes a second.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import torch

from gloro.atomic import torch_save
from gloro.data.download import download_file, md5_file
from gloro.data.errors import (
    ChecksumError,
    CorruptDataError,
    DataError,
    DatasetUnavailableError,
    UnverifiedDataWarning,
)
from gloro.data.registry import SPLITS, DatasetSpec, dataset_spec
from gloro.data.split import RawSplit, Split, Subset

CACHE_FORMAT = 1


def default_cache_dir() -> Path:
    """Where prepared files and downloads go by default: $XDG_CACHE_HOME/gloro-bench or ~/.cache/gloro-bench."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "gloro-bench"


def load_dataset(
    name: str,
    split: str,
    *,
    data_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    download: bool = True,
    mirror: str | None = None,
    subset: int | Subset | Mapping | None = None,
    strict: bool = True,
    progress: bool = True,
) -> Split:
    """One split ('train' or 'test') of data set `name`, from its cached file or, the first time, its sources.

    `strict` (the default) accepts only the official release: every file whose checksum is published must
    match it, and the split must have the official number of examples and classes. `strict=False` reads any
    files in the official formats (a warning names those that differ from the published ones). `mirror` is
    a base URL that replaces the official ones. `subset`: an int (the first N), `Subset(n, seed)` or
    {'size': n, 'seed': s}; it is applied after the cache and recorded in `Split.subset`.
    """
    spec = dataset_spec(name)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    chosen = Subset.coerce(subset)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    data_dir = Path(data_dir).expanduser() if data_dir is not None else None
    full = _load(spec, split, data_dir, cache_dir, download, mirror, strict, progress)
    if chosen is None:
        return full
    keep = chosen.indices(len(full))
    return replace(full, images=full.images[keep], labels=full.labels[keep], subset=chosen.describe(len(full)))


def prepare_dataset(name: str, *, splits: tuple[str, ...] = SPLITS, **options) -> dict[str, Split]:
    """Write (or check) the cached file of each split; `options` are those of `load_dataset`, less subset."""
    if "subset" in options:
        raise TypeError("prepare_dataset caches whole splits; apply a subset when loading")
    return {split: load_dataset(name, split, **options) for split in splits}


def dataset_available(
    name: str, *, data_dir: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None
) -> bool:
    """Whether both splits of `name` can be read without a download (bundled, found on disk, or cached)."""
    spec = dataset_spec(name)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folders = search_folders(spec, Path(data_dir).expanduser() if data_dir is not None else None, cache_dir)
    return all(
        _locate(spec, split, folders) is not None or cache_file(name, split, cache_dir).is_file() for split in SPLITS
    )


def cache_file(name: str, split: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """The cached file that `load_dataset(name, split)` reads and, the first time, writes.

    The name is not looked up, so a pattern such as Snakemake's "{dataset}" gives the pattern of the path.
    """
    return (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / f"{name}-{split}.pt"


def search_folders(spec: DatasetSpec, data_dir: Path | None, cache_dir: Path) -> list[Path]:
    """Folders searched for the official files, in order of preference."""
    folders = []
    if data_dir is not None:
        folders += [data_dir / spec.name, data_dir]
    if spec.release is not None:
        folders += [*spec.release.system_dirs, download_folder(spec, cache_dir)]
    return folders


def download_folder(spec: DatasetSpec, cache_dir: Path) -> Path:
    return cache_dir / "downloads" / spec.name


def _locate(spec: DatasetSpec, split: str, folders: list[Path]) -> Path | None:
    if spec.bundled is not None:
        return Path(spec.bundled())
    for folder in folders:
        if folder.is_dir() and (found := spec.find(folder, split)) is not None:
            return found
    return None


def _load(
    spec: DatasetSpec,
    split: str,
    data_dir: Path | None,
    cache_dir: Path,
    download: bool,
    mirror: str | None,
    strict: bool,
    progress: bool,
) -> Split:
    folders = search_folders(spec, data_dir, cache_dir)
    location = _locate(spec, split, folders)
    cached_path = cache_file(spec.name, split, cache_dir)
    cached = _read_cache(cached_path, spec, split)
    if cached is not None and _current(cached["meta"], location, strict):
        return _split(spec, split, cached["images"], cached["labels"], cached["meta"], cached_path)
    if location is None:
        if not download:
            raise DatasetUnavailableError(_unavailable(spec, split, folders, cache_dir, "downloading is off"))
        location = _download(spec, split, folders, cache_dir, mirror, progress)
    raw = spec.read(location, split, progress)
    official = _check(spec, split, location, raw, strict)
    meta = {
        "dataset": spec.name,
        "split": split,
        "shape": list(raw.images.shape),
        "class_names": list(spec.class_names or raw.class_names),
        "divisor": spec.divisor,
        "location": str(location.resolve()),
        "fingerprint": _fingerprint(raw.fingerprint),
        "sources": raw.sources,
        "official": official,
    }
    images, labels = torch.from_numpy(raw.images), torch.from_numpy(raw.labels)
    _write_cache(cached_path, {"format": CACHE_FORMAT, "images": images, "labels": labels, "meta": meta})
    return _split(spec, split, images, labels, meta, cached_path)


def _split(spec, split, images, labels, meta, cached_path: Path) -> Split:
    return Split(
        name=spec.name,
        split=split,
        images=images,
        labels=labels,
        class_names=tuple(meta["class_names"]),
        divisor=float(meta["divisor"]),
        sources=tuple(meta["sources"]),
        cache_file=str(cached_path),
        location=meta["location"],
    )


def _check(spec: DatasetSpec, split: str, location: Path, raw: RawSplit, strict: bool) -> bool:
    """Whether the split is the official release; with `strict`, anything else raises."""
    class_names = spec.class_names or raw.class_names
    if raw.images.shape[1:] != spec.shape or len(raw.labels) != len(raw.images) or not len(raw.labels):
        raise CorruptDataError(f"{location}: images of shape {raw.images.shape}, expected (N>0, {spec.shape})")
    if raw.labels.min() < 0 or raw.labels.max() >= len(class_names):
        raise CorruptDataError(f"{location}: labels outside 0..{len(class_names) - 1}")
    mismatched = [source for source in raw.sources if source["checksum"] == "mismatch"]
    described = "; ".join(
        f"{source['file']}: md5 {', '.join(source['md5'].values())}, "
        f"published {' or '.join(source['published_md5'].values())}"
        for source in mismatched
    )
    full = len(raw.labels) == spec.sizes[split] and len(class_names) == spec.num_classes
    if strict and mismatched:
        raise ChecksumError(
            f"{spec.name} {split}: not the published files ({described}). They may be corrupt or truncated: "
            "replace them with the official files, or pass strict=False to use files of your own"
        )
    if strict and not full:
        raise CorruptDataError(
            f"{location}: {len(raw.labels)} {split} examples in {len(class_names)} classes; the official "
            f"{spec.name} has {spec.sizes[split]} in {spec.num_classes}. Pass strict=False to use other files"
        )
    if mismatched:
        warnings.warn(f"{spec.name} {split}: loaded unverified files ({described})", UnverifiedDataWarning, 4)
    return full and not mismatched


def _download(
    spec: DatasetSpec, split: str, folders: list[Path], cache_dir: Path, mirror: str | None, progress: bool
) -> Path:
    """Fetch every official file not yet downloaded into the download folder; return the located source."""
    folder = download_folder(spec, cache_dir)
    for file in spec.release.files:
        target = folder / file.name
        if target.is_file() and md5_file(target) == file.md5:
            continue
        reasons = []
        for url in spec.release.urls(file, mirror):
            try:
                download_file(url, target, file.md5, progress=progress)
                break
            except DataError as error:
                reasons.append(str(error))
        else:
            raise DatasetUnavailableError(
                _unavailable(spec, split, folders, cache_dir, f"the download failed: {'; '.join(reasons)}")
            )
    located = spec.find(folder, split)
    if located is None:
        raise DatasetUnavailableError(f"{folder}: downloaded {spec.name}, but its {split} split is not there")
    return located


def _unavailable(spec: DatasetSpec, split: str, folders: list[Path], cache_dir: Path, reason: str) -> str:
    return (
        f"{spec.name} ({split}) is not available: {reason}. Looked for the official files in: "
        f"{', '.join(str(folder) for folder in folders)}. Place the official files "
        f"({', '.join(spec.official_files())}) in {download_folder(spec, cache_dir)}, or in a folder passed as "
        "data_dir (--data-dir), and run again"
    )


def _fingerprint(paths: list[Path]) -> list[list]:
    """[path, bytes, newest mtime_ns, files] for each source path (a folder counts all files below it)."""
    rows = []
    for path in paths:
        if path.is_file():
            stat = path.stat()
            rows.append([str(path.resolve()), stat.st_size, stat.st_mtime_ns, 1])
        elif path.is_dir():
            size = newest = count = 0
            for root, _, names in os.walk(path):
                newest = max(newest, os.stat(root).st_mtime_ns)
                for name in names:
                    stat = os.stat(os.path.join(root, name))
                    size, newest, count = size + stat.st_size, max(newest, stat.st_mtime_ns), count + 1
            rows.append([str(path.resolve()), size, newest, count])
        else:
            rows.append([str(path), -1, -1, 0])
    return rows


def _current(meta: dict, location: Path | None, strict: bool) -> bool:
    """Whether a cache still stands for the source found now (with no source left, it stands alone)."""
    if strict and not meta["official"]:
        return False
    if location is None:
        return True
    if meta["location"] != str(location.resolve()):
        return False
    return meta["fingerprint"] == _fingerprint([Path(row[0]) for row in meta["fingerprint"]])


def _read_cache(path: Path, spec: DatasetSpec, split: str) -> dict | None:
    """The cached payload if it is present and sound; a damaged one is reported and rebuilt."""
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        _validate_cache(payload, spec, split)
    except Exception as error:  # any failure to read it back means the same: rebuild from the sources
        warnings.warn(f"{path}: unusable cache ({type(error).__name__}: {error}); rebuilding it", stacklevel=4)
        return None
    return payload


def _validate_cache(payload, spec: DatasetSpec, split: str) -> None:
    if not isinstance(payload, dict) or payload.get("format") != CACHE_FORMAT:
        raise ValueError(f"not a format-{CACHE_FORMAT} gloro data cache")
    images, labels, meta = payload["images"], payload["labels"], payload["meta"]
    if meta.get("dataset") != spec.name or meta.get("split") != split:
        raise ValueError(f"holds {meta.get('dataset')} {meta.get('split')}, expected {spec.name} {split}")
    if images.dtype != torch.uint8 or images.dim() != 4 or tuple(images.shape[1:]) != spec.shape:
        raise ValueError(f"images {images.dtype} {tuple(images.shape)}, expected uint8 (N, {spec.shape})")
    if labels.dtype != torch.int64 or labels.shape != (len(images),) or not len(labels):
        raise ValueError(f"labels {labels.dtype} {tuple(labels.shape)}, expected int64 ({len(images)},)")
    if int(labels.min()) < 0 or int(labels.max()) >= len(meta["class_names"]):
        raise ValueError(f"labels outside 0..{len(meta['class_names']) - 1}")
    for key in ("divisor", "location", "fingerprint", "sources", "official"):
        if key not in meta:
            raise ValueError(f"metadata lacks {key!r}")


def _write_cache(path: Path, payload: dict) -> None:
    """torch.save to a temporary file beside `path`, then rename: readers never see a partial cache."""
    torch_save(payload, path)
