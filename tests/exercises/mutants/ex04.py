"""Wrong solutions of exercise 4 that tests/exercises/test_ex04_noisy_topk.py must fail (tests/course/test_mutants.py).

Each entry is ``(name, old, new)``: ``old`` occurs exactly once in solutions/ex04_noisy_topk.py and
``new`` replaces it with one classic mistake that contradicts the stub's docstring.
"""

MUTANTS = [
    # Large x handled, but log(1 + exp(x)) loses everything below about -37 (1 + 4e-18 == 1).
    (
        "softplus_loses_tiny_values",
        "return np.maximum(x, 0.0) + np.log1p(np.exp(-np.abs(x)))",
        "return np.where(x > 30.0, x, np.log(1.0 + np.exp(x)))",
    ),
    # The noise enters unscaled: H = x W_g + eps, W_noise ignored.
    (
        "noise_scale_forgotten",
        "return clean + np.asarray(noise, dtype=np.float64) * scale",
        "return clean + np.asarray(noise, dtype=np.float64)",
    ),
    # KeepTopK writes -inf into the caller's array instead of returning a new one.
    (
        "keep_top_k_in_place",
        "    kept = np.full_like(h, -np.inf)\n"
        "    np.put_along_axis(kept, order, np.take_along_axis(h, order, axis=-1), axis=-1)\n"
        "    return kept",
        "    dropped = np.ones(h.shape, dtype=bool)\n"
        "    np.put_along_axis(dropped, order, False, axis=-1)\n"
        "    h[dropped] = -np.inf\n"
        "    return h",
    ),
    # Reversing an ascending argsort: ties go to the HIGHER expert index.
    (
        "indices_ties_to_the_higher_index",
        'indices = np.argsort(-h, axis=-1, kind="stable")[:, :k]\n    return gates, indices',
        'indices = np.argsort(h, axis=-1, kind="stable")[:, ::-1][:, :k]\n    return gates, indices',
    ),
    # The softmax of all of H, masked to the top k: not renormalised over the kept experts.
    (
        "gates_not_renormalised",
        "gates = z / z.sum(axis=-1, keepdims=True)",
        "gates = z / np.exp(h - kept.max(axis=-1, keepdims=True)).sum(axis=-1, keepdims=True)",
    ),
]
