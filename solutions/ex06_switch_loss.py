"""Exercise 6: the Switch Transformer load-balancing loss.

Learning goal: implement the auxiliary loss that keeps a top-1 router from
sending every token to the same expert,

    loss = alpha * N * sum_i f_i * P_i

over the N experts, for a batch of T tokens:

- f_i = (1/T) * #{tokens whose top-1 expert (argmax of the router
  probabilities) is i}: the fraction of tokens dispatched to expert i. It is a
  count, so it has no gradient;
- P_i = (1/T) * sum_t p_i(x_t): the mean router probability of expert i. It
  is differentiable, and the gradient of the loss reaches the router only
  through P.

Facts to check with your implementation: the loss is exactly alpha whenever
the routing is perfectly even (all f_i = 1/N) or the router is uniform (all
p_i = 1/N); it tends to alpha * N when one expert takes every token with
probability 1; multiplying by N keeps its scale independent of the number of
experts. Careful: alpha is *not* a lower bound: the loss can be a little
below alpha when f and P disagree (see `switch_balance_loss`'s example).

Use `keras.ops` (not numpy) in `switch_balance_loss`, so that the loss is a
differentiable tensor: the tests take its gradient with `tf.GradientTape`.
Ties in the argmax go to the lower expert index (what `ops.argmax` does).

Reference: Fedus, Zoph & Shazeer (2021; JMLR 2022), "Switch Transformers:
Scaling to Trillion Parameter Models with Simple and Efficient Sparsity",
section 2.2, equations (4)-(6) (alpha = 1e-2 in the paper).
"""

# stub: from keras import ops  # noqa: F401 - for your solution
from keras import ops


def expert_fractions(router_probs):
    """f: the fraction of tokens whose top-1 expert is i.

    Args:
        router_probs: `[T, N]` router softmax probabilities.

    Returns:
        `[N]`, non-negative, summing to 1.

    Example:
        >>> probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.5, 0.4, 0.1], [0.2, 0.2, 0.6]])
        >>> expert_fractions(probs)            # top-1 experts 0, 1, 0, 2
        [0.5, 0.25, 0.25]
    """
    # --- solution
    probs = ops.convert_to_tensor(router_probs, dtype="float32")
    num_experts = probs.shape[-1]
    top1 = ops.one_hot(ops.argmax(probs, axis=-1), num_experts, dtype="float32")  # [T, N]
    return ops.mean(top1, axis=0)
    # --- end solution


def mean_router_probs(router_probs):
    """P: the mean router probability of each expert over the batch.

    Args:
        router_probs: `[T, N]` router softmax probabilities.

    Returns:
        `[N]`, summing to 1.

    Example:
        >>> mean_router_probs(probs)           # the probs of expert_fractions' example
        [0.375, 0.35, 0.275]
    """
    # --- solution
    return ops.mean(ops.convert_to_tensor(router_probs, dtype="float32"), axis=0)
    # --- end solution


def switch_balance_loss(router_probs, alpha=1e-2):
    """Switch load-balancing loss `alpha * N * sum_i f_i * P_i`, differentiable through P.

    Args:
        router_probs: `[T, N]` router softmax probabilities (a tensor, so the
            caller may differentiate the loss with respect to it).
        alpha: the loss coefficient (1e-2 in the paper).

    Returns:
        A scalar tensor. Its gradient with respect to `router_probs[t, i]`
        is `alpha * N * f_i / T`.

    Example:
        >>> switch_balance_loss(probs, alpha=0.01)     # 0.01 * 3 * (0.5*0.375 + 0.25*0.35 + 0.25*0.275)
        0.0103125
        >>> switch_balance_loss(np.array([[0.51, 0.49], [0.51, 0.49], [0.0, 1.0]]), alpha=1.0)
        0.8933...                                      # f = [2/3, 1/3], P = [0.34, 0.66]: below alpha
    """
    # --- solution
    probs = ops.cast(ops.convert_to_tensor(router_probs), "float32")
    num_experts = probs.shape[-1]
    fractions = ops.stop_gradient(expert_fractions(probs))  # a count: no gradient
    return alpha * num_experts * ops.sum(fractions * mean_router_probs(probs))
    # --- end solution
