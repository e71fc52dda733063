"""Exercise 13: auxiliary-loss-free load balancing (DeepSeek-V3).

Learning goal: balance the experts' load without an auxiliary loss, whose
gradient competes with the language-modelling loss. Each expert i gets a
bias b_i that is used **only to choose** the top-k experts; the gate values
still come from the original affinities s_i, so the bias never changes how
much an expert's output counts, only whether it is chosen. After each
training step the bias moves by a fixed step gamma against the observed
load: down for an overloaded expert, up for an underloaded one.

What is implemented here (DeepSeek-V3, Sec. 2.1.1 and 2.1.2):

    s_{i,t} = sigmoid(u_t^T e_i)                       affinity (V3 uses sigmoid, not softmax)
    chosen  = TopK_i(s_{i,t} + b_i, K_r)               selection uses the bias
    g_{i,t} = s_{i,t} / sum_{j in chosen} s_{j,t}      gates: original affinities, normalised
                                                        over the chosen experts (0 elsewhere)
    b_i    <- b_i - gamma * sign(load_i - mean_load)   after each step; unchanged when equal

The bias is not a trained parameter: it receives no gradient (the top-k
indices are not differentiable and the gates never read the bias); it is
updated by the rule above, outside the optimizer (in Keras: a non-trainable
weight assigned in a callback or in `train_step`). V3 also keeps a tiny
sequence-wise balance loss, not part of this exercise.

Papers: DeepSeek-AI (2024), "DeepSeek-V3 Technical Report"; Wang et al. (2024),
"Auxiliary-Loss-Free Load Balancing Strategy for Mixture-of-Experts".

Write `route_with_bias` with `keras.ops` (it must stay differentiable with
respect to the router logits); the other two functions may use numpy.
"""

# --- solution
# stub: import numpy as np  # noqa: F401  (for your solution)
# stub: from keras import ops  # noqa: F401  (for your solution)
import numpy as np
from keras import ops

# --- end solution


def route_with_bias(logits, bias, k):
    """Top-k selection on biased affinities, gates from the unbiased ones.

    Args:
        logits: `[T, E]` router logits `u_t^T e_i`.
        bias: `[E]` per-expert balancing bias b.
        k: experts per token, `1 <= k <= E`.

    Returns:
        `(gates, indices)`, both `[T, k]`: `indices` the k experts with the
        largest `sigmoid(logits) + bias` (best first; ties: lower index),
        `gates` their *unbiased* affinities `sigmoid(logits)` divided by the
        sum over the k chosen experts (each row sums to 1). Gradients flow
        from the gates to the logits, never to the bias.

    Example:
        Affinities s = sigmoid((2, 0, -1)) = (0.881, 0.5, 0.269). Expert 0
        is the best, but with the bias (-0.5, 0, 0.3) the biased scores are
        (0.381, 0.5, 0.569), so experts 2 and 1 are chosen; their gates use
        the unbiased s: 0.269 / (0.269 + 0.5) and 0.5 / (0.269 + 0.5):

        >>> gates, indices = route_with_bias(np.array([[2.0, 0.0, -1.0]]), np.array([-0.5, 0.0, 0.3]), k=2)
        >>> np.asarray(indices).tolist(), np.asarray(gates, dtype=np.float64).round(3).tolist()
        ([[2, 1]], [[0.35, 0.65]])
    """
    # --- solution
    # stub: raise NotImplementedError("exercise 13: implement route_with_bias")
    scores = ops.sigmoid(ops.cast(ops.convert_to_tensor(logits), "float32"))  # [T, E]
    bias = ops.stop_gradient(ops.cast(ops.convert_to_tensor(bias), "float32"))  # not a trained parameter
    _, indices = ops.top_k(scores + bias, k=k)  # selection only
    indices = ops.cast(indices, "int32")
    chosen = ops.take_along_axis(scores, indices, axis=-1)  # the ORIGINAL affinities
    gates = chosen / ops.sum(chosen, axis=-1, keepdims=True)
    return gates, indices
    # --- end solution


def expert_load(indices, num_experts):
    """Tokens routed to each expert in the batch.

    Args:
        indices: `[T, k]` chosen experts.
        num_experts: E.

    Returns:
        `[E]` counts (sum `T * k`).

    Example:
        >>> expert_load(np.array([[0, 1], [0, 2], [0, 1]]), 4)
        array([3, 2, 1, 0])
    """
    # --- solution
    # stub: raise NotImplementedError("exercise 13: implement expert_load")
    return np.bincount(np.asarray(indices).ravel(), minlength=num_experts)
    # --- end solution


def update_bias(bias, load, gamma):
    """One bias update: `b - gamma * sign(load - mean(load))`.

    An overloaded expert (load above the mean) is made less likely to be
    chosen, an underloaded one more likely; an expert exactly at the mean
    keeps its bias.

    Args:
        bias: `[E]` current bias.
        load: `[E]` tokens each expert received this step.
        gamma: the bias update speed (V3: 0.001 for most of training).

    Returns:
        `[E]` the new bias (a new array; the input is not modified).

    Example:
        >>> update_bias(np.zeros(4), np.array([6, 2, 4, 4]), gamma=0.01)
        array([-0.01,  0.01,  0.  ,  0.  ])
    """
    # --- solution
    # stub: raise NotImplementedError("exercise 13: implement update_bias")
    load = np.asarray(load, dtype=np.float64)
    return np.asarray(bias, dtype=np.float64) - gamma * np.sign(load - load.mean())
    # --- end solution
