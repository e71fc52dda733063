"""Plots of a training run (matplotlib, Agg backend outside notebooks: works without a display).

Both functions take the result rows of `moe_tf.course.train` (one dict per model with
`"model"`, `"history"` — Keras' `History.history` — and `"expert_load"` —
`{layer: {"train": [epochs, E], "val": [epochs, E]}}` from `RoutingStats`)
and write one PNG.

`class_gate_means` and `plot_gate_heatmap` show what a router does with each
class: the mean gate weight of every expert over the examples of each class
(a `[classes, experts]` matrix), drawn on a given or new matplotlib axes.
"""

from pathlib import Path

try:
    import matplotlib.pyplot as plt
except ImportError as err:  # matplotlib comes with the course's extra, not with the library
    raise ImportError(
        "moe_tf.course.plots needs matplotlib: pip install 'moe-tf[course]' (or pip install matplotlib)."
    ) from err
import numpy as np


def _check_rows(rows):
    if not rows:
        raise ValueError("`rows` must hold at least one model's results; received an empty list.")
    for row in rows:
        missing = {"model", "history"} - set(row)
        if missing:
            raise ValueError(f"each row needs the keys 'model' and 'history'; a row lacks {sorted(missing)}.")


def _epoch_axis(ax, num_epochs):
    """Whole-number epoch ticks, 1..num_epochs (at most ~10 of them)."""
    step = max(1, int(np.ceil(num_epochs / 10)))
    ax.set_xticks(np.arange(1, num_epochs + 1, step))
    ax.set_xlim(0.5, num_epochs + 0.5)
    ax.set_xlabel("epoch")


def plot_curves(rows, path, title=None):
    """Training (solid) and validation (dashed) loss and accuracy of every model, per epoch.

    Args:
        rows: result rows, each with `"model"` and `"history"` (`{"loss": [...], "val_loss": [...], ...}`).
        path: PNG file to write (its folder must exist).
        title: optional figure title.

    Returns:
        `path` as a `Path`.

    Example (writes curves.png)::

        plot_curves([{"model": "dense", "history": {"loss": [0.5, 0.3], "accuracy": [0.9, 0.95]}}], "curves.png")
        # PosixPath('curves.png')
    """
    _check_rows(rows)
    path = Path(path)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, row in enumerate(rows):
        color = colors[i % len(colors)]
        for ax, key in zip(axes, ("loss", "accuracy")):
            for prefix, style, label in (("", "-", "train"), ("val_", "--", "val")):
                values = row["history"].get(prefix + key)
                if values:
                    epochs = np.arange(1, len(values) + 1)
                    ax.plot(
                        epochs, values, style, marker="o", markersize=3, color=color, label=f"{row['model']} ({label})"
                    )
    num_epochs = max((len(v) for row in rows for v in row["history"].values()), default=1)
    for ax, key in zip(axes, ("loss", "accuracy")):
        _epoch_axis(ax, num_epochs)
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    axes[0].set_yscale("log")
    axes[1].legend(fontsize=8, loc="lower right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_expert_load(rows, path):
    """Per-expert load (fraction of routed assignments) over epochs, one panel per MoE layer.

    A balanced router keeps every expert near `1/E` (the dotted line); collapse
    shows as one line climbing towards 1. Dense models (no `"expert_load"`) are skipped.

    Args:
        rows: result rows; each MoE row has `"expert_load"`: `{layer: {"train": [epochs, E], ...}}`.
        path: PNG file to write.

    Returns:
        `path` as a `Path`.

    Example (writes load.png)::

        rows = [{"model": "switch", "history": {}, "expert_load": {"moe": {"train": [[.5, .5], [.6, .4]]}}}]
        plot_expert_load(rows, "load.png")  # PosixPath('load.png')
    """
    _check_rows(rows)
    panels = [
        (row["model"], layer, np.asarray(load["train"], dtype=float))
        for row in rows
        for layer, load in row.get("expert_load", {}).items()
    ]
    panels = [p for p in panels if p[2].ndim == 2 and p[2].size]
    if not panels:
        raise ValueError("`rows` hold no per-expert load to plot (no model has a non-empty 'expert_load').")
    path = Path(path)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, (model, layer, load) in zip(axes[0], panels):
        epochs = np.arange(1, load.shape[0] + 1)
        num_experts = load.shape[1]
        cmap = plt.get_cmap("tab10" if num_experts <= 10 else "viridis")
        for e in range(num_experts):
            color = cmap(e % 10) if num_experts <= 10 else cmap(e / max(1, num_experts - 1))
            ax.plot(epochs, load[:, e], marker="o", markersize=3, color=color, label=f"expert {e}")
        ax.axhline(1.0 / num_experts, linestyle=":", color="black", label="1/E (balanced)")
        ax.set_title(f"{model} ({layer})")
        _epoch_axis(ax, load.shape[0])
        ax.set_ylabel("load (fraction of assignments)")
        ax.set_ylim(0, max(2.5 / num_experts, float(load.max()) * 1.1))
        ax.grid(alpha=0.3)
    if panels[0][2].shape[1] <= 10:
        axes[0][-1].legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# -- gates per class ------------------------------------------------------------


def class_gate_means(gates, labels, num_classes=None):
    """Mean gate weight of each expert over the examples of each class.

    Row c is the average gate vector of the examples labelled c. With softmax
    gates (or top-k gates that sum to 1) every row sums to 1, and a uniform
    router gives `1/E` everywhere; a row close to one-hot means that class is
    (almost) always sent to one expert.

    Args:
        gates: `[N, E]` gate weights of N examples (dense softmax gates, or
            top-k gates with zeros outside the chosen experts).
        labels: `[N]` integer class ids in `[0, num_classes)`.
        num_classes: number of rows C; None means `max(labels) + 1`.

    Returns:
        A float64 NumPy array `[C, E]`. A class without examples gets a row of NaN.

    Example:
    >>> class_gate_means([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]], [0, 0, 1])
    array([[0.75, 0.25],
           [0.  , 1.  ]])
    """
    gates = np.asarray(gates, dtype=np.float64)
    labels = np.asarray(labels)
    if gates.ndim != 2 or 0 in gates.shape:
        raise ValueError(f"`gates` must be a non-empty 2-D array [examples, experts]; received shape {gates.shape}.")
    if labels.shape != (gates.shape[0],):
        raise ValueError(
            f"`labels` must have shape ({gates.shape[0]},), one class id per row of `gates`; "
            f"received shape {labels.shape}."
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"`labels` must hold integer class ids; received dtype {labels.dtype}.")
    if labels.min() < 0:
        raise ValueError(f"`labels` must be >= 0; received a label {int(labels.min())}.")
    if num_classes is None:
        num_classes = int(labels.max()) + 1
    elif isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"`num_classes` must be a positive integer or None; received num_classes={num_classes!r}.")
    elif labels.max() >= num_classes:
        raise ValueError(f"`labels` must be < num_classes={num_classes}; received a label {int(labels.max())}.")
    sums = np.zeros((num_classes, gates.shape[1]))
    np.add.at(sums, labels, gates)
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts[:, None]


def plot_gate_heatmap(
    matrix,
    *,
    ax=None,
    row_names=None,
    row_label="class",
    title=None,
    annotate=True,
    vmax=None,
    cmap="viridis",
    path=None,
):
    """Draws a `[classes, experts]` gate matrix (e.g. from `class_gate_means`) as a heat map.

    Each cell is printed with two decimals when `annotate` is True. The colour
    bar starts at 0; its label marks the uniform value `1/E`, the level every
    cell would sit at if the router ignored its input.

    Args:
        matrix: `[C, E]` array of mean gate weights.
        ax: matplotlib axes to draw on; None makes a new figure (`figsize` scaled to the matrix).
        row_names: C row tick labels; None means `0..C-1`.
        row_label: y-axis label (e.g. `"digit"`).
        title: axes title.
        annotate: write each value in its cell.
        vmax: top of the colour scale; None means the matrix maximum.
        cmap: matplotlib colour map.
        path: if given, the figure is also saved there as a PNG (dpi 90).

    Returns:
        The matplotlib `Axes` drawn on (`ax.figure` is its figure; `ax.images[0]` the heat map).

    Example (gates `[N, E]` of N test images, their labels `y_test`)::

        ax = plot_gate_heatmap(class_gate_means(gates, y_test, 10), row_label="digit")
        plt.show()
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.ndim != 2 or 0 in matrix.shape:
        raise ValueError(f"`matrix` must be a non-empty 2-D array [classes, experts]; received shape {matrix.shape}.")
    num_rows, num_experts = matrix.shape
    if row_names is not None and len(row_names) != num_rows:
        raise ValueError(f"`row_names` must hold {num_rows} names, one per row; received {len(row_names)}.")
    if ax is None:
        _, ax = plt.subplots(figsize=(1.2 + 0.55 * num_experts, 0.8 + 0.36 * num_rows), dpi=90)
    top = float(np.nanmax(matrix)) if vmax is None else float(vmax)
    image = ax.imshow(matrix, cmap=cmap, vmin=0.0, vmax=top if top > 0 else 1.0, aspect="auto")
    cbar = ax.figure.colorbar(image, ax=ax, fraction=0.05, pad=0.03)
    cbar.set_label(f"mean gate (uniform = 1/E = {1 / num_experts:.3g})", fontsize=8)
    if annotate:
        middle = (top if top > 0 else 1.0) / 2
        for (r, e), value in np.ndenumerate(matrix):
            if np.isfinite(value):
                color = "black" if value > middle else "white"
                ax.text(e, r, f"{value:.2f}", ha="center", va="center", fontsize=7, color=color)
    ax.set_xticks(range(num_experts))
    ax.set_yticks(range(num_rows))
    ax.set_yticklabels([str(n) for n in (range(num_rows) if row_names is None else row_names)])
    ax.set_xlabel("expert")
    ax.set_ylabel(row_label)
    if title:
        ax.set_title(title)
    if path is not None:
        ax.figure.savefig(Path(path), dpi=90, bbox_inches="tight")
    return ax
