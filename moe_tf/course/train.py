"""`python -m moe_tf train`: train dense and MoE models on MNIST or IMDB and compare them.

    python -m moe_tf train --task mnist --model all                 # the `make demo` comparison
    python -m moe_tf train --task mnist --model topk-moe --epochs 20
    python -m moe_tf train --task imdb --model dense switch --train-size 5000

Every model is trained the same way (same data order, seed, optimizer, schedule
and epochs): Adam with a cosine-decaying learning rate, batch size per task,
`jit_compile=True`. After training it prints one aligned table:

    model | test accuracy | total params | active params/example | active FLOPs/example
          | step time (median ms per training step after compilation) | train time | dropped (test)

and writes, under `runs/<task>-<timestamp or --name>/`,

- `results.json`: every number of the table, the resolved arguments, the
  per-epoch history of each model (loss, accuracy, routing metrics, and the
  per-expert load from `RoutingStats`), and the library versions;
- `curves.png`: training and validation loss and accuracy of every model;
- `expert_load.png`: each MoE model's per-expert load, epoch by epoch.

Argument errors exit with status 2 before any data is loaded; missing data
exits with status 1 and the loader's message.
"""

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

from moe_tf.course.models import MODELS

TASKS = ("mnist", "imdb")

# Official split sizes, for checking --train-size / --val-size / --test-size before loading anything.
SPLIT_SIZES = {"mnist": (60000, 10000), "imdb": (25000, 25000)}

# Per-task defaults of every option whose parser default is None.
TASK_DEFAULTS = {
    "mnist": dict(
        epochs=3,
        # 125 divides the 55,000 / 5,000 / 10,000 split sizes: no partial last batch, so XLA compiles the
        # training and the evaluation step once each instead of twice (a partial batch has a new shape).
        batch_size=125,
        val_size=5000,
        learning_rate=1e-3,
        width=256,
        expert_units=256,
        experts=8,
        dropout=0.3,
        input_dropout=0.2,
        capacity_factor=1.25,
    ),
    "imdb": dict(
        # Mixtures of linear experts on Naive-Bayes-weighted 1-2-grams (see models.build_ngram_model):
        # 2 epochs at 5e-3; the width/dropout options do not apply to them.
        epochs=2,
        batch_size=64,
        val_size=2500,
        learning_rate=5e-3,
        width=64,
        expert_units=64,
        experts=8,
        dropout=0.0,
        input_dropout=0.0,
        max_tokens=100000,
        # LinearExpertsMoE computes every expert in one sparse matmul, so a capacity limit
        # saves no compute there; it would only drop assignments (34-54% at 1.25).
        capacity_factor=None,
    ),
}

DASH = "—"

# Parser default of options whose per-task default may be None (e.g. --capacity-factor none).
_PER_TASK = object()


# -- arguments ----------------------------------------------------------------


def _capacity(text):
    if text.lower() in ("none", "inf"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0 or 'none'; received {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0 or 'none'; received {text!r}")
    return value


def build_parser(prog="python -m moe_tf train"):
    """The argument parser of `train` (see `main`)."""
    p = argparse.ArgumentParser(
        prog=prog,
        description="Train dense and Mixture-of-Experts models on MNIST or IMDB and print a comparison table.",
        epilog="Per-task defaults: "
        + "; ".join(f"{t}: " + ", ".join(f"{k}={v}" for k, v in d.items()) for t, d in TASK_DEFAULTS.items()),
    )
    p.add_argument("--task", default="mnist", choices=TASKS, help="dataset (default: mnist)")
    p.add_argument(
        "--model",
        nargs="+",
        default=["all"],
        choices=MODELS + ("all",),
        metavar="MODEL",
        help=f"one or more of {', '.join(MODELS)}, or all (default: all)",
    )
    p.add_argument("--experts", type=int, help="number of experts E of the MoE models (default: per task)")
    p.add_argument("--k", type=int, default=2, help="experts per example of topk-moe (default: 2)")
    p.add_argument(
        "--capacity-factor",
        type=_capacity,
        default=_PER_TASK,
        help="capacity factor of topk-moe and switch, or 'none' for no token dropping (default: mnist 1.25, imdb none)",
    )
    p.add_argument(
        "--balance-loss",
        default="switch",
        choices=("switch", "shazeer", "none"),
        help="balance loss of topk-moe (switch always uses the Switch loss, alpha=1e-2) (default: switch)",
    )
    p.add_argument(
        "--balance-loss-weight", type=float, default=1e-2, help="alpha of topk-moe's balance loss (default: 0.01)"
    )
    p.add_argument(
        "--z-loss-weight", type=float, default=1e-3, help="router z-loss weight of topk-moe and switch (default: 0.001)"
    )
    p.add_argument(
        "--noise",
        default="gaussian",
        choices=("gaussian", "jitter", "none"),
        help="router noise of topk-moe (switch uses jitter) (default: gaussian)",
    )
    p.add_argument("--epochs", type=int, help="training epochs (default: per task, see below)")
    p.add_argument("--batch-size", type=int, help="batch size (default: per task)")
    p.add_argument("--learning-rate", "--lr", type=float, help="peak Adam learning rate (cosine decay to 0)")
    p.add_argument("--width", type=int, help="width of the residual stream")
    p.add_argument("--expert-units", type=int, help="hidden units of each expert (and of the dense block)")
    p.add_argument("--dropout", type=float, help="dropout rate")
    p.add_argument("--input-dropout", type=float, help="dropout rate on the inputs")
    p.add_argument("--max-tokens", type=int, help="imdb: n-gram vocabulary size (tf-idf features)")
    p.add_argument("--train-size", type=int, help="training examples (default: all but the validation set)")
    p.add_argument("--val-size", type=int, help="validation examples carved from the training split")
    p.add_argument("--test-size", type=int, help="test examples (default: the whole official test split)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, initialisation and shuffling (default: 0)")
    p.add_argument("--out", default="runs", help="folder of the run folders (default: runs)")
    p.add_argument("--name", help="run folder name (default: <task>-<timestamp>)")
    p.add_argument("--data-dir", help="data folder (default: $MOE_TF_DATA_DIR, else the download cache)")
    p.add_argument("--no-jit", dest="jit_compile", action="store_false", help="do not compile with XLA")
    p.add_argument("--no-plots", dest="plots", action="store_false", help="do not write the PNG plots")
    p.add_argument(
        "--verbose", type=int, choices=(0, 1, 2), help="Keras fit verbosity (default: 1 on a terminal, else 2)"
    )
    return p


def _resolve(args, parser):
    """Fills per-task defaults and checks every argument; `parser.error` (exit 2) on the first bad one."""
    for key, value in TASK_DEFAULTS[args.task].items():
        current = getattr(args, key, None)
        # None is a value of its own ("none") for options whose parser default is the _PER_TASK marker.
        if current is _PER_TASK or (current is None and parser.get_default(key) is not _PER_TASK):
            setattr(args, key, value)
    models = []
    for name in args.model:
        for m in MODELS if name == "all" else (name,):
            if m not in models:
                models.append(m)
    args.model = models

    def positive(flag, value):
        if value is None or value < 1:
            parser.error(f"argument {flag}: must be a positive integer; received {value}")

    positive("--epochs", args.epochs)
    positive("--batch-size", args.batch_size)
    positive("--experts", args.experts)
    positive("--width", args.width)
    positive("--expert-units", args.expert_units)
    if args.max_tokens is not None and args.max_tokens < 3:
        parser.error(f"argument --max-tokens: must be an integer >= 3; received {args.max_tokens}")
    if args.k < 1:
        parser.error(f"argument --k: must be at least 1; received --k {args.k}")
    if "topk-moe" in models and args.k > args.experts:
        parser.error(
            f"argument --k: must satisfy 1 <= k <= --experts ({args.experts}) for topk-moe; received --k {args.k}"
        )
    for flag, value in (("--learning-rate", args.learning_rate),):
        if not (math.isfinite(value) and value > 0):
            parser.error(f"argument {flag}: must be a finite number > 0; received {value}")
    for flag, value in (("--dropout", args.dropout), ("--input-dropout", args.input_dropout)):
        if not (0 <= value < 1):
            parser.error(f"argument {flag}: must be in [0, 1); received {value}")
    for flag, value in (("--balance-loss-weight", args.balance_loss_weight), ("--z-loss-weight", args.z_loss_weight)):
        if not (math.isfinite(value) and value >= 0):
            parser.error(f"argument {flag}: must be a finite number >= 0; received {value}")
    n_train, n_test = SPLIT_SIZES[args.task]
    if not 0 <= args.val_size < n_train:
        parser.error(
            f"argument --val-size: must satisfy 0 <= val-size < {n_train} for {args.task}; received {args.val_size}"
        )
    limit = n_train - args.val_size
    if args.train_size is not None and not 1 <= args.train_size <= limit:
        parser.error(
            f"argument --train-size: must satisfy 1 <= train-size <= {limit} for {args.task} "
            f"({n_train} training examples minus --val-size {args.val_size}); received {args.train_size}"
        )
    if args.test_size is not None and not 1 <= args.test_size <= n_test:
        parser.error(
            f"argument --test-size: must satisfy 1 <= test-size <= {n_test} for {args.task}; received {args.test_size}"
        )
    if args.name is not None and (not args.name or "/" in args.name or args.name in (".", "..")):
        parser.error(f"argument --name: must be a plain folder name; received {args.name!r}")
    if args.verbose is None:
        args.verbose = 1 if sys.stdout.isatty() else 2
    return args


# -- data -----------------------------------------------------------------------


class TaskData:
    """Train / validation / test data of a task, in the form `model.fit` takes.

    `train`, `val`, `test` are `(x, y)` tuples (MNIST) or `tf.data.Dataset`s
    (IMDB); `steps_per_epoch` drives the learning-rate schedule.
    """

    def __init__(self, train, val, test, input_dim, num_classes, num_train, batch_size, description):
        self.train, self.val, self.test = train, val, test
        self.input_dim, self.num_classes = input_dim, num_classes
        self.num_train = num_train
        self.steps_per_epoch = max(1, math.ceil(num_train / batch_size))
        self.description = description


def load_task(args):
    """Loads the task's data with `moe_tf.data` (raises its `DataUnavailableError` when missing)."""
    from moe_tf import data

    common = dict(
        validation_size=args.val_size,
        train_size=args.train_size,
        test_size=args.test_size,
        seed=args.seed,
        data_dir=args.data_dir,
    )
    if args.task == "mnist":
        splits = data.load_mnist(flatten=True, **common)
        (x, y), val, test = splits.train, splits.val, splits.test
        val = val if len(val[1]) else None
        sizes = f"{len(y)} train / {0 if val is None else len(val[1])} val / {len(test[1])} test"
        return TaskData((x, y), val, test, x.shape[-1], 10, len(y), args.batch_size, f"MNIST, {sizes}")
    imdb = data.load_imdb(
        "ngrams", max_tokens=args.max_tokens, weighting="nb", as_dataset=True, batch_size=args.batch_size, **common
    )
    n_train = args.train_size or (SPLIT_SIZES["imdb"][0] - args.val_size)
    val = imdb.val if args.val_size else None
    description = f"IMDB 1-2-grams, NB-weighted ({imdb.vocabulary_size} features), {n_train} train reviews"
    return TaskData(imdb.train, val, imdb.test, imdb.vocabulary_size, 2, n_train, args.batch_size, description)


# -- training -------------------------------------------------------------------


def describe(model_name, args):
    """One line saying what a model is."""
    if args.task == "imdb":
        cf = "no capacity limit" if args.capacity_factor is None else f"capacity factor {args.capacity_factor:g}"
        return {
            "dense": "dense: one linear classifier (logistic regression) on the n-grams",
            "dense-moe": f"dense-moe: softmax mixture of {args.experts} linear experts (1991)",
            "topk-moe": f"topk-moe: top-{args.k} of {args.experts} linear experts, {cf}, Switch loss 1e-2",
            "switch": f"switch: top-1 of {args.experts} linear experts, {cf}, Switch loss 1e-2",
        }[model_name]
    if model_name == "dense":
        return f"dense: residual FFN {args.width}->{args.expert_units}->{args.width} (= one expert path)"
    if model_name == "dense-moe":
        return f"dense-moe: softmax mixture of all {args.experts} experts (1991)"
    cf = "no capacity limit" if args.capacity_factor is None else f"capacity factor {args.capacity_factor:g}"
    if model_name == "switch":
        return f"switch: top-1 of {args.experts} experts, {cf}, Switch loss 1e-2, jitter"
    loss = (
        "no balance loss" if args.balance_loss == "none" else f"{args.balance_loss} loss {args.balance_loss_weight:g}"
    )
    return f"topk-moe: top-{args.k} of {args.experts} experts, {cf}, {loss}, {args.noise} noise"


def build_and_compile(model_name, args, task_data):
    """Builds `model_name` with the run's hyper-parameters and compiles it (Adam, cosine decay, XLA)."""
    import keras

    from moe_tf.course.models import build_model, build_ngram_model

    keras.utils.set_random_seed(args.seed)
    if args.task == "imdb":
        model = build_ngram_model(
            model_name,
            task_data.input_dim,
            task_data.num_classes,
            num_experts=args.experts,
            k=args.k,
            capacity_factor=args.capacity_factor,
            seed=args.seed,
        )
    else:
        model = build_model(
            model_name,
            task_data.input_dim,
            task_data.num_classes,
            width=args.width,
            expert_units=args.expert_units,
            num_experts=args.experts,
            k=args.k,
            capacity_factor=args.capacity_factor,
            balance_loss=args.balance_loss,
            balance_loss_weight=args.balance_loss_weight,
            z_loss_weight=args.z_loss_weight,
            noise=args.noise,
            dropout=args.dropout,
            input_dropout=args.input_dropout,
            seed=args.seed,
        )
    schedule = keras.optimizers.schedules.CosineDecay(args.learning_rate, args.epochs * task_data.steps_per_epoch)
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=args.jit_compile,
    )
    return model


def _fit_inputs(split):
    return (split, None) if not isinstance(split, tuple) else split


def train_one(model_name, args, task_data):
    """Trains and tests one model; returns its row of results (plain Python numbers)."""
    import numpy as np

    from moe_tf.callbacks import RoutingStats, StepTimer
    from moe_tf.cost import model_cost
    from moe_tf.course.models import moe_layers

    model = build_and_compile(model_name, args, task_data)
    cost = model_cost(model)
    moes = moe_layers(model)
    stats = RoutingStats() if moes else None
    timer = StepTimer()
    x, y = _fit_inputs(task_data.train)
    fit_kwargs = dict(
        epochs=args.epochs,
        validation_data=task_data.val,
        callbacks=[timer] + ([stats] if stats else []),
        verbose=args.verbose,
    )
    if y is not None:
        fit_kwargs.update(y=y, batch_size=args.batch_size, shuffle=True)
    else:
        fit_kwargs.update(shuffle=False)  # a tf.data pipeline from moe_tf.data reshuffles itself every epoch
    start, cpu_start = time.perf_counter(), time.process_time()
    history = model.fit(x, **fit_kwargs)
    train_time, train_cpu = time.perf_counter() - start, time.process_time() - cpu_start
    tx, ty = _fit_inputs(task_data.test)
    eval_kwargs = dict(verbose=0, return_dict=True)
    if ty is not None:
        eval_kwargs.update(y=ty, batch_size=args.batch_size)
    test = model.evaluate(tx, **eval_kwargs)
    dropped = None
    if moes:
        name = moes[0].name
        dropped = float(test[f"{name}_dropped"])
    row = {
        "model": model_name,
        "description": describe(model_name, args),
        "test_accuracy": float(test["accuracy"]),
        "test_loss": float(test["loss"]),
        **cost,
        "train_time_s": train_time,
        "train_cpu_s": train_cpu,
        "step_ms": timer.median_ms(),
        "test_dropped": dropped,
        "test_metrics": {k: float(v) for k, v in test.items()},
        "history": {k: [float(v) for v in values] for k, values in history.history.items()},
        "expert_load": {},
    }
    if stats:
        for layer, load in stats.history.items():
            val = stats.val_history.get(layer, [])
            row["expert_load"][layer] = {"train": np.asarray(load).tolist(), "val": np.asarray(val).tolist()}
    return row


# -- reporting --------------------------------------------------------------------

TABLE_COLUMNS = (
    "model",
    "test acc",
    "total params",
    "active params/ex",
    "active FLOPs/ex",
    "step time",
    "train time",
    "dropped (test)",
)

TABLE_FOOTNOTE = (
    "active = what one example's inference forward pass uses: a MoE layer's router plus k of its E experts\n"
    "(all E for dense-moe). FLOPs = 2 x multiply-adds of the matrix multiplications; biases, activations,\n"
    "gating and residual adds are not counted. step time = median wall-clock of one training step after\n"
    "compilation. train time = wall-clock of model.fit, including XLA compilation and per-epoch validation.\n"
    "dropped = fraction of (example, expert) assignments over capacity."
)


def format_table(rows):
    """The aligned results table (a string, footnote included)."""
    cells = [TABLE_COLUMNS]
    for r in rows:
        cells.append(
            (
                r["model"],
                f"{100 * r['test_accuracy']:.2f}%",
                f"{r['total_params']:,}",
                f"{r['active_params']:,}",
                f"{r['active_flops']:,}",
                DASH if r.get("step_ms") is None else f"{r['step_ms']:.1f} ms",
                f"{r['train_time_s']:.1f} s",
                DASH if r["test_dropped"] is None else f"{100 * r['test_dropped']:.2f}%",
            )
        )
    widths = [max(len(row[i]) for row in cells) for i in range(len(TABLE_COLUMNS))]

    def line(row):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))

    rule = "-" * len(line(cells[0]))
    return "\n".join([line(cells[0]), rule, *map(line, cells[1:]), rule, TABLE_FOOTNOTE])


def versions():
    import keras
    import numpy as np
    import tensorflow as tf

    import moe_tf

    return {
        "moe_tf": moe_tf.__version__,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
    }


def run_dir(args, now=None):
    """`<out>/<task>-<name or timestamp>`."""
    stamp = args.name or time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    return Path(args.out) / f"{args.task}-{stamp}"


# -- entry point --------------------------------------------------------------------


def main(argv=None):
    """Runs `train` with command-line arguments `argv` (None: `sys.argv[1:]`).

    Args:
        argv: list of strings, e.g. `["--task", "mnist", "--model", "all"]`.

    Returns:
        0 on success. Raises `SystemExit(2)` for a bad argument (before any data
        is loaded) and `SystemExit(1)` when the data cannot be found.

    Example (trains two models on MNIST)::

        main(["--task", "mnist", "--model", "dense", "switch", "--epochs", "1", "--train-size", "2000"])  # 0
    """
    parser = build_parser()
    args = _resolve(parser.parse_args(argv), parser)
    started, cpu_started = time.time(), time.process_time()

    from moe_tf.data import DataUnavailableError

    print(f"moe_tf train: task={args.task}, models={', '.join(args.model)}, epochs={args.epochs}, seed={args.seed}")
    try:
        task_data = load_task(args)
    except DataUnavailableError as exc:
        parser.exit(1, f"{parser.prog}: error: data unavailable: {exc}\n")
    print(f"data: {task_data.description}")

    rows = []
    for name in args.model:
        print(f"\n== {describe(name, args)} ==", flush=True)
        rows.append(train_one(name, args, task_data))

    table = format_table(rows)
    print(
        f"\nResults: {task_data.description}, {args.epochs} epoch{'s' if args.epochs > 1 else ''}, batch {args.batch_size}, seed {args.seed}\n"
    )
    print(table)
    wall, cpu = time.time() - started, time.process_time() - cpu_started
    load = f", load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores" if hasattr(os, "getloadavg") else ""
    print(f"total: {wall:.0f} s wall, {cpu:.0f} s CPU (all threads){load}")

    out = run_dir(args, started)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"results": str(out / "results.json")}
    if args.plots:
        import matplotlib

        if not os.environ.get("MPLBACKEND"):  # files only: no display needed (a notebook keeps its own backend)
            matplotlib.use("Agg")
        from moe_tf.course import plots

        paths["curves"] = str(plots.plot_curves(rows, out / "curves.png", title=task_data.description))
        if any(r["expert_load"] for r in rows):
            paths["expert_load"] = str(plots.plot_expert_load(rows, out / "expert_load.png"))
    results = {
        "task": args.task,
        "data": task_data.description,
        "argv": list(sys.argv[1:] if argv is None else argv),
        "args": {k: v for k, v in vars(args).items()},
        "table": table,
        "results": rows,
        "versions": versions(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "total_time_s": wall,
        "total_cpu_s": cpu,
        "paths": paths,
    }
    Path(paths["results"]).write_text(json.dumps(results, indent=2) + "\n")
    print()
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
