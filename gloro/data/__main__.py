"""`python -m gloro.data list` and `python -m gloro.data prepare NAME`: see what is known, write the caches.
`--plugin FILE_OR_MODULE` (repeatable) imports a module that registers data sets of its own first."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence

from gloro.data.errors import DataError
from gloro.data.prepare import default_cache_dir, prepare_dataset
from gloro.data.registry import dataset_spec, datasets
from gloro.plugins import load_plugins


def parser() -> argparse.ArgumentParser:
    main_parser = argparse.ArgumentParser(prog="python -m gloro.data", description=__doc__)
    commands = main_parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="the data sets, their shapes and official sizes")
    prepare = commands.add_parser("prepare", help="read the official files once and write the cached splits")
    for command in (listing, prepare):
        command.add_argument(
            "--plugin", action="append", default=[], help="a .py file or module to import first (repeatable)"
        )
    prepare.add_argument("name", choices=datasets())
    prepare.add_argument("--data-dir", help="folder holding the official files (or a sub-folder named NAME)")
    prepare.add_argument("--cache-dir", default=None, help=f"where caches and downloads go ({default_cache_dir()})")
    prepare.add_argument("--no-download", action="store_true", help="fail rather than download")
    prepare.add_argument("--mirror", help="base URL that replaces the official download URLs")
    prepare.add_argument("--no-strict", action="store_true", help="accept files that differ from the release")
    prepare.add_argument("--quiet", action="store_true", help="no progress bars")
    return main_parser


def main(argv: Sequence[str] | None = None) -> int:
    early = argparse.ArgumentParser(add_help=False)  # the plugins first: their data sets are choices below
    early.add_argument("--plugin", action="append", default=[])
    load_plugins(early.parse_known_args(argv)[0].plugin)
    args = parser().parse_args(argv)
    if args.command == "list":
        for spec in map(dataset_spec, datasets()):
            sizes = ", ".join(f"{split} {size}" for split, size in spec.sizes.items())
            print(f"{spec.name:14} {'×'.join(map(str, spec.shape)):8} {spec.num_classes:3} classes  {sizes}")
            print(f"{'':14} {spec.description}")
        return 0
    start = time.perf_counter()
    try:
        splits = prepare_dataset(
            args.name,
            data_dir=args.data_dir,
            cache_dir=args.cache_dir,
            download=not args.no_download,
            mirror=args.mirror,
            strict=not args.no_strict,
            progress=not args.quiet,
        )
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    summary = {
        split: {k: v for k, v in data.metadata().items() if k != "class_names"} for split, data in splits.items()
    }
    print(json.dumps(summary, indent=2))
    print(f"prepared {args.name} in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
