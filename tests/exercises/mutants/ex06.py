"""Wrong solutions of exercise 6 that tests/exercises/test_ex06_switch_loss.py must fail (tests/course/test_mutants.py).

Each entry is ``(name, old, new)``: ``old`` occurs exactly once in solutions/ex06_switch_loss.py and
``new`` replaces it with one classic mistake that contradicts the stub's docstring.
"""

MUTANTS = [
    # The argmax of the reversed probabilities: ties go to the HIGHER expert index.
    (
        "argmax_ties_to_the_higher_index",
        "ops.argmax(probs, axis=-1)",
        "num_experts - 1 - ops.argmax(ops.flip(probs, axis=-1), axis=-1)",
    ),
    # f from the probabilities (P twice) instead of the top-1 counts.
    ("fractions_are_mean_probabilities", "return ops.mean(top1, axis=0)", "return ops.mean(probs, axis=0)"),
    # Without the factor N the loss scales with the number of experts.
    ("times_n_forgotten", "return alpha * num_experts * ops.sum(", "return alpha * ops.sum("),
    # A default alpha other than the documented 1e-2.
    (
        "default_alpha_not_the_papers",
        "def switch_balance_loss(router_probs, alpha=1e-2):",
        "def switch_balance_loss(router_probs, alpha=1.0):",
    ),
    # P detached too: the loss has no gradient at all.
    (
        "no_gradient_through_p",
        "ops.sum(fractions * mean_router_probs(probs))",
        "ops.sum(fractions * ops.stop_gradient(mean_router_probs(probs)))",
    ),
    # Through numpy and back: the value is right, the graph is broken.
    (
        "numpy_breaks_the_graph",
        'probs = ops.cast(ops.convert_to_tensor(router_probs), "float32")',
        'probs = ops.convert_to_tensor(ops.convert_to_numpy(router_probs).astype("float32"))',
    ),
]
