"""Command line: prepare an offline data folder, or see where the data would come from.

    python -m moe_tf.data download [DIR]   # default DIR: ./moe_tf_data
    python -m moe_tf.data info [DIR]       # default: $MOE_TF_DATA_DIR, else the cache

`download` writes mnist.npz, imdb/train.jsonl.gz and imdb/test.jsonl.gz (plus `.sha256`
sidecars) into DIR and prints their sizes and sha256. Copy DIR to the classroom machines
and set MOE_TF_DATA_DIR=DIR there.
"""

import argparse
import sys

from moe_tf import quiet_tensorflow
from moe_tf.data import _sources
from moe_tf.data._common import DataUnavailableError


def _parser():
    parser = argparse.ArgumentParser(prog="python -m moe_tf.data", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="{download,info}")
    download = commands.add_parser("download", help="write the datasets into DIR for offline use")
    download.add_argument(
        "dir", nargs="?", default="moe_tf_data", metavar="DIR", help="destination folder (default: ./moe_tf_data)"
    )
    download.add_argument(
        "--only",
        choices=sorted(_sources.GROUPS),
        action="append",
        help="fetch only this dataset (repeatable; default: all)",
    )
    info = commands.add_parser("info", help="say which source each dataset would be loaded from")
    info.add_argument(
        "dir",
        nargs="?",
        default=None,
        metavar="DIR",
        help="data folder to inspect (default: $MOE_TF_DATA_DIR, else the cache)",
    )
    return parser


def main(argv=None):
    quiet_tensorflow()  # before a download imports TensorFlow
    args = _parser().parse_args(argv)
    if args.command == "download":
        groups = tuple(dict.fromkeys(args.only)) if args.only else tuple(_sources.GROUPS)
        try:
            report = _sources.download(args.dir, groups)
        except (DataUnavailableError, _sources.CorruptFile, OSError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        folder = _sources.Path(args.dir).absolute()
        print(f"Wrote {folder}:")
        for name, size, digest in report:
            print(f"  {name:<22} {size:>12,} bytes  sha256 {digest}")
        print(f"Use it with: export {_sources.DATA_DIR_ENV}={folder}")
        return 0

    for group in _sources.GROUPS:
        kind, folder = _sources.source_of(group, args.dir)
        line = f"{group}: {kind} {folder}"
        if kind != "download":
            try:
                arrays = _sources.load_group(group, folder)
            except DataUnavailableError as err:
                print(f"{line}\n  unavailable: {err}")
                continue
            if group == "mnist":
                line += f" (train {len(arrays[0])}, test {len(arrays[2])})"
            else:
                line += f" (train {len(arrays[0][1])}, test {len(arrays[1][1])})"
        else:
            line += " (not there yet: would be downloaded on first use)"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
