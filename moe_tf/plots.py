"""Plots of a training run (matplotlib, Agg backend: works without a display).

Both functions take the result rows of `moe_tf.train` (one dict per model with
`"model"`, `"history"` — Keras' `History.history` — and `"expert_load"` —
`{layer: {"train": [epochs, E], "val": [epochs, E]}}` from `RoutingStats`)
and write one PNG.
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
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

    Example:
    >>> plot_curves([{"model": "dense", "history": {"loss": [0.5, 0.3], "accuracy": [0.9, 0.95]}}], "curves.png")
    PosixPath('curves.png')
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
                    ax.plot(epochs, values, style, marker="o", markersize=3, color=color,
                            label=f"{row['model']} ({label})")
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

    Example:
    >>> rows = [{"model": "switch", "history": {}, "expert_load": {"moe": {"train": [[.5, .5], [.6, .4]]}}}]
    >>> plot_expert_load(rows, "load.png")
    PosixPath('load.png')
    """
    _check_rows(rows)
    panels = [(row["model"], layer, np.asarray(load["train"], dtype=float))
              for row in rows for layer, load in row.get("expert_load", {}).items()]
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
