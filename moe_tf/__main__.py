"""`python -m moe_tf <command> ...`: the command-line entry point.

    python -m moe_tf train --task mnist --model all      # train and compare models (see moe_tf.course.train)
    python -m moe_tf train --help

Commands are loaded lazily, so `--help` and argument errors answer quickly.
"""

import importlib
import sys

from moe_tf import quiet_tensorflow

# command -> (module with a `main(argv)`, one-line help)
COMMANDS = {
    "train": ("moe_tf.course.train", "train dense and MoE models on MNIST or IMDB and print a comparison table"),
}

USAGE = "usage: python -m moe_tf {" + ",".join(COMMANDS) + "} [args...]\n"


def _help():
    lines = [USAGE, "commands:"]
    lines += [f"  {name:<8} {text}" for name, (_, text) in COMMANDS.items()]
    lines.append("\nRun `python -m moe_tf <command> --help` for a command's options.")
    return "\n".join(lines) + "\n"


def main(argv=None):
    """Dispatches `argv[0]` to its command's `main(argv[1:])`.

    Args:
        argv: command-line arguments without the program name (None: `sys.argv[1:]`).

    Returns:
        The command's exit status. An unknown or missing command prints the
        usage and exits with status 2.

    Example:
    >>> main(["train", "--task", "mnist", "--model", "dense", "--epochs", "1"])
    0
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        if not argv:
            sys.stderr.write(USAGE + "python -m moe_tf: error: a command is required\n")
            raise SystemExit(2)
        sys.stdout.write(_help())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        sys.stderr.write(
            USAGE + f"python -m moe_tf: error: unknown command {command!r} (choose from {', '.join(COMMANDS)})\n"
        )
        raise SystemExit(2)
    quiet_tensorflow()  # before the command's module imports TensorFlow
    module = importlib.import_module(COMMANDS[command][0])
    return module.main(rest)


if __name__ == "__main__":
    sys.exit(main())
