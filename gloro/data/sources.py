"""The official files of each data set: where their publishers serve them and the checksums they publish.

`md5` is the checksum of the file as distributed (what a download must match). `content_md5` is the checksum
of the decompressed IDX payload, so that an ungzipped or re-gzipped copy (Debian's package re-gzips
Fashion-MNIST without the file name in the gzip header) is recognised as the same data. `members` lists the
checksums of the files inside an archive, so an unpacked copy is recognised too.

MNIST: torchvision's list for the four .gz files; their decompressed MD5s as listed by several independent
projects. Fashion-MNIST: Zalando's README (the .gz MD5s, also torchvision's); the decompressed MD5s also
match those of Debian's dataset-fashion-mnist files. CIFAR: Krizhevsky's page and torchvision (archive and
batch files). Tiny-ImageNet: the zip's MD5 as used by several loaders; no per-file checksums are published.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from gloro.data.errors import CorruptDataError


@dataclass(frozen=True)
class OfficialFile:
    """One file as its publisher distributes it."""

    name: str
    md5: str
    content_md5: str | None = None
    members: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Release:
    """Where a data set's official files are served (mirrors tried in order) and what they are."""

    base_urls: tuple[str, ...]
    files: tuple[OfficialFile, ...]
    system_dirs: tuple[Path, ...] = ()

    def urls(self, file: OfficialFile, mirror: str | None = None) -> list[str]:
        bases = (mirror,) if mirror else self.base_urls
        return [f"{base.rstrip('/')}/{file.name}" for base in bases]


MNIST = Release(
    base_urls=("https://ossci-datasets.s3.amazonaws.com/mnist", "http://yann.lecun.com/exdb/mnist"),
    files=(
        OfficialFile(
            "train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873", "6bbc9ace898e44ae57da46a324031adb"
        ),
        OfficialFile(
            "train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432", "a25bea736e30d166cdddb491f175f624"
        ),
        OfficialFile(
            "t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3", "2646ac647ad5339dbf082846283269ea"
        ),
        OfficialFile(
            "t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c", "27ae3e4e09519cfbb04c329615203637"
        ),
    ),
)

FASHION_MNIST = Release(
    base_urls=("https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion",),
    files=(
        OfficialFile(
            "train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d", "f4a8712d7a061bf5bd6d2ca38dc4d50a"
        ),
        OfficialFile(
            "train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe", "9018921c3c673c538a1fc5bad174d6f9"
        ),
        OfficialFile(
            "t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79", "8181f5470baa50b63fa0f6fddb340f0a"
        ),
        OfficialFile(
            "t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310", "15d484375f8d13e6eb1aabb0c3f46965"
        ),
    ),
    system_dirs=(Path("/usr/share/datasets/fashion-mnist"),),  # Debian's dataset-fashion-mnist
)

CIFAR10 = Release(
    base_urls=("https://www.cs.toronto.edu/~kriz",),
    files=(
        OfficialFile(
            "cifar-10-python.tar.gz",
            "c58f30108f718f92721af3b95e74349a",
            members={
                "data_batch_1": "c99cafc152244af753f735de768cd75f",
                "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
                "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
                "data_batch_4": "634d18415352ddfa80567beed471001a",
                "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
                "test_batch": "40351d587109b95175f43aff81a1287e",
                "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
            },
        ),
    ),
)

CIFAR100 = Release(
    base_urls=("https://www.cs.toronto.edu/~kriz",),
    files=(
        OfficialFile(
            "cifar-100-python.tar.gz",
            "eb9058c3a382ffc7106e4002c42a8d85",
            members={
                "train": "16019d7e3df5f24257cddd939b257f8d",
                "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
                "meta": "7973b15100ade9c7d40fb424638fde48",
            },
        ),
    ),
)

TINY_IMAGENET = Release(
    base_urls=("http://cs231n.stanford.edu",),
    files=(OfficialFile("tiny-imagenet-200.zip", "90528d7ca1a48142e341f4ef8d21d0de"),),
)

RELEASES = {
    "mnist": MNIST,
    "fashion-mnist": FASHION_MNIST,
    "cifar10": CIFAR10,
    "cifar100": CIFAR100,
    "tiny-imagenet": TINY_IMAGENET,
}


def known_checksums(dataset: str) -> dict[str, str]:
    """{file name: md5} for every form of `dataset`'s files: distributed, decompressed, archive members."""
    known = {}
    for file in RELEASES[dataset].files:
        known[file.name] = file.md5
        if file.content_md5:
            known[file.name.removesuffix(".gz")] = file.content_md5
        known.update(file.members)
    return known


def identify(md5: str) -> tuple[str, str] | None:
    """(data set, file name) of the official file with this MD5, if it is one; to catch swapped files."""
    for dataset in RELEASES:
        for name, known in known_checksums(dataset).items():
            if known == md5:
                return dataset, name
    return None


def source_record(dataset: str, label: str, measured: dict[str, str]) -> dict:
    """Checksum record of one source file, for the cache's metadata and the strict check.

    `measured` maps official file names to the MD5 measured for that form of the file: the file itself and,
    for a gzipped IDX file, its decompressed payload. `checksum` is 'verified' when any form matches the
    published MD5, 'mismatch' when none does, 'unpublished' when the publisher lists no checksum.
    A file that is some other official file (MNIST given as Fashion-MNIST, labels given as images) raises.
    """
    known = known_checksums(dataset) if dataset in RELEASES else {}
    for name, md5 in measured.items():
        other = identify(md5)
        if other is not None and other != (dataset, name) and known.get(name) != md5:
            raise CorruptDataError(f"{label} is {other[0]}'s official {other[1]}, not {dataset}'s {name}")
    published = {name: known[name] for name in measured if name in known}
    if not published:
        status = "unpublished"
    elif any(measured[name] == md5 for name, md5 in published.items()):
        status = "verified"
    else:
        status = "mismatch"
    return {"file": label, "md5": dict(measured), "published_md5": published, "checksum": status}
