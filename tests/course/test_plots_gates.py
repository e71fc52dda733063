"""`moe_tf.course.plots.class_gate_means` and `plot_gate_heatmap`, and the plotting backend choice."""

import os
import subprocess
import sys

import matplotlib.pyplot as plt
import numpy as np
import pytest

from moe_tf.course.plots import class_gate_means, plot_gate_heatmap


def _softmax(x):
    z = np.exp(x - x.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def test_class_gate_means_averages_the_gates_of_each_class():
    gates = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.2, 0.3, 0.5], [0.0, 0.0, 1.0]])
    labels = np.array([2, 0, 0, 1])
    means = class_gate_means(gates, labels)
    expected = np.array([[0.1, 0.65, 0.25], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    np.testing.assert_allclose(means, expected)


def test_rows_of_softmax_gates_sum_to_one_and_match_a_loop():
    rng = np.random.default_rng(0)
    gates = _softmax(rng.normal(size=(500, 8)))
    labels = rng.integers(0, 10, size=500)
    means = class_gate_means(gates, labels, num_classes=10)
    assert means.shape == (10, 8)
    np.testing.assert_allclose(means.sum(axis=1), 1.0)
    for c in range(10):
        np.testing.assert_allclose(means[c], gates[labels == c].mean(axis=0))


def test_a_class_without_examples_gets_nan_and_a_uniform_router_gives_one_over_e():
    gates = np.full((6, 4), 0.25)
    means = class_gate_means(gates, [0, 0, 1, 1, 3, 3], num_classes=5)
    np.testing.assert_allclose(means[[0, 1, 3]], 0.25)
    assert np.isnan(means[2]).all() and np.isnan(means[4]).all()


@pytest.mark.parametrize(
    "gates, labels, num_classes, message",
    [
        (np.ones(4), [0, 1, 2, 3], None, "`gates` must be a non-empty 2-D"),
        (np.ones((4, 2)), [0, 1, 2], None, "`labels` must have shape \\(4,\\)"),
        (np.ones((2, 2)), [0.0, 1.0], None, "integer class ids"),
        (np.ones((2, 2)), [0, -1], None, "must be >= 0"),
        (np.ones((2, 2)), [0, 3], 3, "must be < num_classes=3"),
        (np.ones((2, 2)), [0, 1], 0, "`num_classes` must be a positive integer"),
    ],
)
def test_class_gate_means_rejects_bad_arguments(gates, labels, num_classes, message):
    with pytest.raises(ValueError, match=message):
        class_gate_means(gates, np.asarray(labels), num_classes=num_classes)


def test_heatmap_draws_the_matrix_with_annotations_and_writes_a_png(tmp_path):
    matrix = np.array([[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]])
    path = tmp_path / "gates.png"
    ax = plot_gate_heatmap(matrix, row_names=["a", "b"], row_label="digit", title="t", path=path)
    try:
        np.testing.assert_allclose(np.asarray(ax.images[0].get_array()), matrix)
        assert ax.images[0].get_clim() == (0.0, 0.8)
        assert sorted(t.get_text() for t in ax.texts) == sorted(["0.50", "0.25", "0.25", "0.10", "0.10", "0.80"])
        assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b"]
        assert ax.get_ylabel() == "digit" and ax.get_xlabel() == "expert" and ax.get_title() == "t"
        assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        plt.close(ax.figure)


def test_heatmap_draws_on_a_given_axes_without_annotations():
    fig, axes = plt.subplots(1, 2)
    try:
        ax = plot_gate_heatmap(np.full((10, 4), 0.25), ax=axes[1], annotate=False)
        assert ax is axes[1] and not ax.texts and not axes[0].images
    finally:
        plt.close(fig)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"matrix": np.ones(3)}, "`matrix` must be a non-empty 2-D"),
        ({"matrix": np.ones((2, 3)), "row_names": ["a"]}, "`row_names` must hold 2 names"),
    ],
)
def test_heatmap_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        plot_gate_heatmap(**kwargs)


def _backend_after_import(env_backend):
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    if env_backend:
        env["MPLBACKEND"] = env_backend
    code = "import moe_tf.course.plots, matplotlib; print(matplotlib.get_backend())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def test_importing_plots_selects_agg_in_a_script_but_keeps_a_chosen_backend():
    # A script or the CLI gets Agg (no display needed); a notebook kernel sets MPLBACKEND
    # (ipykernel's inline backend), and importing moe_tf.course.plots must not replace it.
    assert _backend_after_import(None).lower() == "agg"
    assert _backend_after_import("pdf").lower() == "pdf"
