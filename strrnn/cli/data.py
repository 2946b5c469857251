"""``strrnn data``: where the data sets are read from, and downloads into those folders.

    strrnn data where [NAME ...]        the folder each data set is read from, and whether it is there
    strrnn data download NAME [--root DIR]
"""

from __future__ import annotations

import argparse
import sys

from ..data.downloader import ALIASES, ARCHIVES, download
from ..data.errors import DataError
from ..data.paths import FOLDERS, dataset_dir, env_var
from ..run_folder import RunFolderError, check_output_folder


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``strrnn data``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="strrnn data", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    where = commands.add_parser("where", help="print the folder each data set is read from")
    where.add_argument("names", nargs="*", metavar="NAME", help="data sets (default: all with a folder)")
    names = sorted({*ARCHIVES, *ALIASES} - {"fsdd_image"})
    get = commands.add_parser("download", help="download a data set into its folder")
    get.add_argument("name", choices=names, metavar="NAME", help=f"one of: {', '.join(names)}")
    get.add_argument("--root", default=None, help="destination (default: the folder `where` prints)")
    get.add_argument("--keep-archive", action="store_true", help="keep the downloaded archive after unpacking")
    args = parser.parse_args(argv)
    if args.command == "where":
        for name in args.names or sorted(FOLDERS):
            folder = dataset_dir(name)
            variable = env_var(name)
            print(f"{name}: {folder}{'' if folder.exists() else ' (missing)'}"
                  f"{f'  [${variable}]' if variable else ''}")
        return 0
    root = dataset_dir(args.name, args.root)
    try:
        check_output_folder(root, "--root" if args.root else "the data folder")  # before any byte is fetched
        download(args.name, root, keep_archive=args.keep_archive)
    except (DataError, FileExistsError, RunFolderError) as err:
        print(f"strrnn data download: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a folder that became unwritable midway, a full disk
        print(f"strrnn data download: error: cannot write {root}: {err}", file=sys.stderr)
        return 2
    print(f"{args.name}: {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
