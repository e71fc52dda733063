"""Wrong repairs of exercise 15 (the bug museum) that tests/exercises/test_ex15_bug_museum.py must fail.

Each mutant is `(name, old, new)`: `old` occurs exactly once in solutions/ex15_bug_museum.py and is replaced
by `new`, giving one exhibit repaired at the symptom (or with one classic mistake left) against its docstring.
"""

MUTANTS = [
    (
        "H_dropped_rows_masked_by_multiplication",  # 0 * inf and 0 * NaN garbage give NaN, not exactly 0
        "return tf.where(kept, weighted, tf.zeros_like(weighted))",
        "return weighted * tf.cast(kept, weighted.dtype)",
    ),
    (
        "B_weights_normalised_inside_fusion",  # the formula uses the weights as given
        "return tf.reduce_sum(stacked * weights[:, :, None], axis=1)  # [B, d]",
        "weights = weights / tf.reduce_sum(weights, axis=1, keepdims=True)\n"
        "    return tf.reduce_sum(stacked * weights[:, :, None], axis=1)  # [B, d]",
    ),
    (
        "C_softmax_without_the_max_shift",  # exp(200) overflows float32: inf / inf = NaN
        "gates = tf.nn.softmax(mixture_logits, axis=-1)  # [B, E]",
        "gates = tf.exp(mixture_logits) / tf.reduce_sum(tf.exp(mixture_logits), axis=-1, keepdims=True)",
    ),
    (
        "F_keep_one_past_capacity",  # exclusive cumsum fixed, but the comparison now keeps C + 1 tokens
        "keep = tf.cast(positions < capacity, tf.float32)",
        "keep = tf.cast(positions <= capacity, tf.float32)",
    ),
    (
        "E_gates_behind_stop_gradient",  # the output is right, but the router still learns nothing
        'return tf.einsum("be,ebo->bo", gates, stacked)',
        'return tf.einsum("be,ebo->bo", tf.stop_gradient(gates), stacked)',
    ),
    (
        "I_loss_added_without_gradient",  # layer.losses is no longer empty, yet the optimiser cannot use it
        "self.add_loss(aux)",
        "self.add_loss(ops.stop_gradient(aux))",
    ),
]
