"""moe_tf.analysis: the features and examples each expert prefers."""

import numpy as np
import pytest

from moe_tf.analysis import top_examples, top_features

NAMES = ["good", "bad", "the", "plot", "great"]


def test_top_features_ranks_each_column():
    w = np.array([[2.0, -1.0], [-3.0, 4.0], [0.5, 0.5], [1.0, 3.0], [3.0, 0.0]])
    top = top_features(w, NAMES, k=2)
    assert top == [[("great", 3.0), ("good", 2.0)], [("bad", 4.0), ("plot", 3.0)]]
    bottom = top_features(w, NAMES, k=1, largest=False)
    assert bottom == [[("bad", -3.0)], [("good", -1.0)]]


def test_centering_removes_what_all_experts_share():
    # "the" pushes every expert's logit up by 10: the softmax gates do not move, so it prefers no expert.
    w = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [10.0, 10.0, 10.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    raw = top_features(w, NAMES, k=1)
    assert [col[0][0] for col in raw] == ["the", "the", "the"]
    centered = top_features(w, NAMES, k=1, center=True)
    assert [col[0][0] for col in centered] == ["good", "bad", "plot"]
    np.testing.assert_allclose([col[0][1] for col in centered], [2 / 3] * 3)


def test_centered_scores_match_softmax_gate_changes():
    # The centered score is what adding the feature does to the gates: softmax(l + w_j) = softmax(l + w_j - mean).
    rng = np.random.default_rng(0)
    w = rng.normal(size=(5, 4))
    logits = rng.normal(size=4)

    def softmax(z):
        z = np.exp(z - z.max())
        return z / z.sum()

    best = top_features(w, NAMES, k=1, center=True)
    for e, [(name, score)] in enumerate(best):
        j = NAMES.index(name)
        centered = w[j] - w[j].mean()
        np.testing.assert_allclose(softmax(logits + w[j]), softmax(logits + centered))
        assert score == pytest.approx(centered[e])


def test_negative_scale_flips_the_direction():
    # A negative-sentiment n-gram has a negative Naive-Bayes value: a positive weight then pushes down.
    w = np.array([[1.0], [5.0], [0.0], [0.0], [2.0]])
    scale = np.array([1.0, -1.0, 1.0, 1.0, 1.0])
    assert top_features(w, NAMES, k=1, scale=scale) == [[("great", 2.0)]]
    assert top_features(w, NAMES, k=1, scale=scale, largest=False) == [[("bad", -5.0)]]


def test_mask_excludes_features_and_limits_k():
    w = np.arange(10.0).reshape(5, 2)
    mask = np.array([True, False, True, False, False])
    top = top_features(w, NAMES, k=10, mask=mask)
    assert top == [[("the", 4.0), ("good", 0.0)], [("the", 5.0), ("good", 1.0)]]


def test_ties_keep_feature_order():
    w = np.ones((5, 1))
    assert [n for n, _ in top_features(w, NAMES, k=3)[0]] == ["good", "bad", "the"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"weights": np.ones(5)}, "`weights` must be a non-empty 2-D array"),
        ({"weights": np.ones((5, 2)), "names": NAMES[:3]}, "`names` must hold one name per row"),
        ({"k": 0}, "`k` must be a positive integer"),
        ({"k": 2.5}, "`k` must be a positive integer"),
        ({"scale": np.ones(3)}, r"`scale` must have shape \(5,\)"),
        ({"mask": np.ones(5)}, "`mask` must be a boolean array"),
        ({"largest": "yes"}, "`largest` must be True or False"),
    ],
)
def test_top_features_errors_name_the_argument(kwargs, message):
    args = {"weights": np.ones((5, 2)), "names": NAMES, "k": 2}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        top_features(args.pop("weights"), args.pop("names"), **args)


def test_top_examples_per_expert():
    gates = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.45, 0.45, 0.1], [0.2, 0.5, 0.3]])
    idx = top_examples(gates, k=2)
    assert idx.shape == (3, 2) and idx.dtype == np.int64
    np.testing.assert_array_equal(idx, [[0, 2], [3, 2], [1, 3]])
    for e in range(3):  # every listed example has a gate at least as large as any unlisted one
        rest = np.setdiff1d(np.arange(4), idx[e])
        assert gates[idx[e], e].min() >= gates[rest, e].max()


def test_top_examples_caps_k_and_checks_inputs():
    gates = np.array([[0.5, 0.5], [0.9, 0.1]])
    np.testing.assert_array_equal(top_examples(gates, k=10), [[1, 0], [0, 1]])
    with pytest.raises(ValueError, match="`gates` must be a non-empty 2-D array"):
        top_examples(np.ones(3))
    with pytest.raises(ValueError, match="`k` must be a positive integer"):
        top_examples(gates, k=-1)
    with pytest.raises(ValueError, match="must hold real numbers"):
        top_examples(np.array([["a", "b"]]))
