"""Looking inside a trained mixture: which features and which examples each expert prefers.

Two small helpers for the "what did the experts learn?" part of a lesson:

    top_features(router_kernel, vocabulary, k=10, center=True)   # n-grams pulling toward each expert
    top_examples(gates, k=3)                                     # the examples each expert is most trusted on

Both are plain NumPy (weights and gates are small once trained) and return
plain Python / NumPy values, ready to print.

Interpreting a router kernel `W_g` `[V, E]` needs one care: the softmax is
unchanged when the same number is added to every expert's logit, so a
feature's weight toward expert e only means something relative to its
weights toward the other experts. `center=True` subtracts each row's mean
over the experts first. And a weight only matters times the value the
feature takes when present (an n-gram's tf-idf or Naive-Bayes value, which
can be negative): pass that as `scale`.
"""

import numpy as np

__all__ = ["top_examples", "top_features"]


def _as_matrix(name, value):
    array = np.asarray(value)
    if array.ndim != 2 or 0 in array.shape:
        raise ValueError(f"`{name}` must be a non-empty 2-D array; received shape {array.shape}.")
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise ValueError(f"`{name}` must hold real numbers; received dtype {array.dtype}.")
    return array.astype(np.float64)


def _check_k(k, limit):
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"`k` must be a positive integer; received k={k!r}.")
    return int(min(k, limit))


def top_features(weights, names, k=10, *, center=False, scale=None, mask=None, largest=True):
    """The `k` features with the largest (or smallest) weight in each column of a weight matrix.

    Typical use: the n-grams whose presence raises the router logit of each
    expert most (`weights` = router kernel `[V, E]`, `center=True`,
    `scale` = the value each n-gram takes when present), or the n-grams an
    expert finds most positive (`weights` = `W[:, e, 1] - W[:, e, 0]` for
    every expert).

    Args:
        weights: `[V, E]` array: one row per feature, one column per expert.
        names: `V` feature names (e.g. `vectorizer.get_vocabulary()`).
        k: features returned per column (fewer if fewer are allowed by `mask`).
        center: subtract each row's mean over the columns first. Use it for
            router kernels: softmax gates depend only on differences between
            experts' logits.
        scale: optional `[V]` factor multiplying each row (after centering):
            the value a feature takes when present. A negative factor flips
            which expert the feature pushes toward.
        mask: optional `[V]` booleans; features where it is False are never
            returned (e.g. rare n-grams).
        largest: True for the largest scores, False for the most negative.

    Returns:
        A list of `E` lists of `(name, score)` tuples, best first; `score` is
        the (centered, scaled) weight as a Python float.

    Example:
    >>> w = np.array([[3., 0.], [0., 2.], [1., 1.]])
    >>> top_features(w, ["a", "b", "c"], k=1)
    [[('a', 3.0)], [('b', 2.0)]]
    >>> top_features(w, ["a", "b", "c"], k=1, scale=[-1., 1., 1.])
    [[('c', 1.0)], [('b', 2.0)]]
    """
    scores = _as_matrix("weights", weights)
    num_features = scores.shape[0]
    names = list(names)
    if len(names) != num_features:
        raise ValueError(
            f"`names` must hold one name per row of `weights` ({num_features}); received {len(names)} names."
        )
    if center:
        scores = scores - scores.mean(axis=1, keepdims=True)
    if scale is not None:
        scale = np.asarray(scale, dtype=np.float64)
        if scale.shape != (num_features,):
            raise ValueError(
                f"`scale` must have shape ({num_features},), one value per feature; received {scale.shape}."
            )
        scores = scores * scale[:, None]
    allowed = np.ones(num_features, bool)
    if mask is not None:
        allowed = np.asarray(mask)
        if allowed.shape != (num_features,) or allowed.dtype != bool:
            raise ValueError(
                f"`mask` must be a boolean array of shape ({num_features},); "
                f"received dtype {allowed.dtype} and shape {allowed.shape}."
            )
    candidates = np.flatnonzero(allowed)
    k = _check_k(k, len(candidates))
    if not isinstance(largest, bool):
        raise ValueError(f"`largest` must be True or False; received largest={largest!r}.")  # noqa: TRY004
    result = []
    for column in scores.T:
        values = column[candidates] if largest else -column[candidates]
        # Stable sort on the negated values: ties keep the feature order.
        order = candidates[np.argsort(-values, kind="stable")[:k]]
        result.append([(names[i], float(column[i])) for i in order])
    return result


def top_examples(gates, k=5):
    """The indices of the `k` examples with the largest gate for each expert.

    Args:
        gates: `[N, E]` gate values (router probabilities, or top-k gates
            with zeros outside the chosen experts) of N examples.
        k: examples returned per expert (at most N).

    Returns:
        An int64 array `[E, k]`: row e lists example indices by decreasing
        gate of expert e (ties: the lower index first).

    Example:
    >>> top_examples(np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]), k=2)
    array([[0, 2],
           [1, 2]])
    """
    gates = _as_matrix("gates", gates)
    k = _check_k(k, gates.shape[0])
    return np.argsort(-gates, axis=0, kind="stable")[:k].T.astype(np.int64)
