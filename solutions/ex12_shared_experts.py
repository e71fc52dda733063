"""Exercise 12: DeepSeekMoE, fine-grained experts and shared experts.

Learning goal: the two ideas of DeepSeekMoE and the arithmetic behind them.

1. Fine-grained expert segmentation: split each of N experts (FFN hidden width
   h) into m smaller experts of width h/m, and route each token to m*k of the
   m*N experts instead of k of N. Total parameters and per-token compute are
   unchanged, but the number of expert combinations a token can use grows
   from C(N, k) to C(mN, mk): with N=16, k=2, m=4 from 120 to 4,426,165,368,
   so experts can specialise more finely.
2. Shared expert isolation: K_s experts are always active for every token and
   capture common knowledge, so the routed experts need not all relearn it:

       h_t = sum_{i <= K_s} FFN_i(u_t) + sum_{routed i} g_{i,t} FFN_i(u_t) + u_t
       s_{i,t} = Softmax_i(u_t^T e_i)  over the routed experts
       g_{i,t} = s_{i,t} if s_{i,t} is among the top-K_r of token t, else 0

   (no renormalisation of the kept gates in DeepSeekMoE).

Paper: Dai et al. (2024), "DeepSeekMoE: Towards Ultimate Expert Specialization
in Mixture-of-Experts Language Models" (the 120 vs 4,426,165,368 example is
theirs). DeepSeek-V2 and V3 keep both ideas (V3: 1 shared + 256 routed
experts, 8 routed active per token).

Simplifications here: an expert is `FFN(x) = relu(x @ W_in) @ W_out` without
biases (DeepSeek uses SwiGLU), so it has `2 * d * h` parameters and costs
`2 * 2 * d * h` FLOPs per token (one multiply and one add per weight); the
forward function returns the FFN part only, without the `+ u_t` residual,
which belongs to the surrounding block (as in `moe_tf.MixtureOfExperts`).

Work with numpy (or `keras.ops`); counts are Python ints.
"""

# stub: import math  # noqa: F401  (for your solution)
import math

# stub: import numpy as np  # noqa: F401  (for your solution)
import numpy as np


def expert_combinations(num_experts, k):
    """Number of distinct expert sets a top-k router can pick, `C(N, k)`.

    Args:
        num_experts: N.
        k: experts per token.

    Returns:
        A Python int.

    Example:
        >>> expert_combinations(16, 2), expert_combinations(64, 8)
        (120, 4426165368)
    """
    # --- solution
    # stub: raise NotImplementedError("exercise 12: implement expert_combinations")
    return math.comb(num_experts, k)
    # --- end solution


def fine_grained_config(num_experts, k, hidden, m):
    """The fine-grained equivalent of a coarse MoE: `(m*N, m*k, h/m)`.

    Args:
        num_experts: N coarse experts.
        k: coarse experts per token.
        hidden: h, a coarse expert's hidden width (divisible by m).
        m: segments per expert.

    Returns:
        `(num_fine_experts, fine_k, fine_hidden)`, Python ints.

    Raises:
        ValueError: if `hidden` is not divisible by `m`.

    Example:
        >>> fine_grained_config(16, 2, hidden=1024, m=4)
        (64, 8, 256)
    """
    # --- solution
    # stub: raise NotImplementedError("exercise 12: implement fine_grained_config")
    if hidden % m:
        raise ValueError(f"hidden={hidden} must be divisible by m={m}")
    return num_experts * m, k * m, hidden // m
    # --- end solution


def ffn_param_count(num_experts, d_model, hidden):
    """Parameters of `num_experts` bias-free FFN experts `d -> h -> d`: `N * 2 * d * h`.

    Args:
        num_experts: how many experts.
        d_model: d.
        hidden: h.

    Returns:
        A Python int.

    Example:
        >>> ffn_param_count(16, 8, 32), ffn_param_count(64, 8, 8)
        (8192, 8192)
    """
    # --- solution
    # stub: raise NotImplementedError("exercise 12: implement ffn_param_count")
    return num_experts * 2 * d_model * hidden
    # --- end solution


def active_flops_per_token(k, d_model, hidden):
    """FLOPs one token spends in its k routed experts: `k * 2 * (2 * d * h)`.

    Each expert does two matmuls, `d x h` and `h x d`, each weight costing a
    multiply and an add.

    Args:
        k: experts per token.
        d_model: d.
        hidden: h.

    Returns:
        A Python int.

    Example:
        >>> active_flops_per_token(2, 8, 32), active_flops_per_token(8, 8, 8)
        (2048, 2048)
    """
    # --- solution
    # stub: raise NotImplementedError("exercise 12: implement active_flops_per_token")
    return k * 2 * (2 * d_model * hidden)
    # --- end solution


def split_expert(w_in, w_out, m):
    """Splits one expert into m fine-grained experts along its hidden units.

    Segment j takes hidden units `[j*h/m, (j+1)*h/m)`: the columns of `w_in`
    and the rows of `w_out`. Because relu acts unit by unit, the sum of the m
    segments' outputs equals the original expert's output exactly.

    Args:
        w_in: `[d, h]`.
        w_out: `[h, d_out]`.
        m: number of segments (h divisible by m).

    Returns:
        `(fine_in, fine_out)`: `[m, d, h/m]` and `[m, h/m, d_out]`.

    Example:
        >>> fine_in, fine_out = split_expert(np.arange(8.).reshape(2, 4), np.ones((4, 3)), m=2)
        >>> fine_in.shape, fine_out.shape, fine_in[1].tolist()
        ((2, 2, 2), (2, 2, 3), [[2.0, 3.0], [6.0, 7.0]])
    """
    # --- solution
    # stub: raise NotImplementedError("exercise 12: implement split_expert")
    w_in = np.asarray(w_in)
    w_out = np.asarray(w_out)
    d, h = w_in.shape
    if h % m:
        raise ValueError(f"hidden width {h} must be divisible by m={m}")
    fine_in = w_in.reshape(d, m, h // m).transpose(1, 0, 2)  # [m, d, h/m]
    fine_out = w_out.reshape(m, h // m, w_out.shape[-1])  # [m, h/m, d_out]
    return fine_in, fine_out
    # --- end solution


def deepseek_moe_forward(x, router_kernel, routed_in, routed_out, shared_in, shared_out, k):
    """Shared experts plus top-k routed experts (DeepSeekMoE), without the residual.

    `y = sum_s FFN_s(x) + sum_{i in top-k} s_i * FFN_i(x)` with
    `s = softmax(x @ router_kernel)` over the routed experts, the top-k taken
    on s (ties: lower expert index), gates not renormalised, and
    `FFN(x) = relu(x @ W_in) @ W_out`.

    Args:
        x: `[T, d]` tokens.
        router_kernel: `[d, N]` (one centroid e_i per routed expert).
        routed_in: `[N, d, h]`; routed_out: `[N, h, d]`.
        shared_in: `[K_s, d, h_s]`; shared_out: `[K_s, h_s, d]` (K_s may be 0).
        k: routed experts per token.

    Returns:
        `[T, d]` outputs.

    Example:
        One shared expert (identity weights) and two routed ones; logits
        (1, 0) pick routed expert 0 (weights 2I, I) with gate sigmoid(1):

        >>> eye = np.eye(2)[None]
        >>> deepseek_moe_forward(np.array([[1., 2.]]), np.array([[1., 0.], [0., 0.]]),
        ...                      np.concatenate([2 * eye, eye]), np.concatenate([eye, eye]),
        ...                      eye, eye, k=1).round(4)                 # [1, 2] + 0.7311 * [2, 4]
        array([[2.4621, 4.9242]])
    """
    # --- solution
    # stub: raise NotImplementedError("exercise 12: implement deepseek_moe_forward")
    x = np.asarray(x, dtype=np.float64)
    shared_in = np.asarray(shared_in, dtype=np.float64)
    shared_out = np.asarray(shared_out, dtype=np.float64)
    routed_in = np.asarray(routed_in, dtype=np.float64)
    routed_out = np.asarray(routed_out, dtype=np.float64)

    # Shared experts: every token, no gate.
    shared_hidden = np.maximum(np.einsum("td,sdh->tsh", x, shared_in), 0.0)
    y = np.einsum("tsh,shd->td", shared_hidden, shared_out)

    # Routed experts: softmax affinities, top-k, gates = the kept affinities.
    logits = x @ np.asarray(router_kernel, dtype=np.float64)  # [T, N]
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    scores = shifted / shifted.sum(axis=-1, keepdims=True)
    indices = np.argsort(-scores, axis=-1, kind="stable")[:, :k]  # [T, k]
    gates = np.take_along_axis(scores, indices, axis=-1)  # [T, k], not renormalised
    hidden = np.maximum(np.einsum("td,tkdh->tkh", x, routed_in[indices]), 0.0)
    routed = np.einsum("tkh,tkhd->tkd", hidden, routed_out[indices])  # [T, k, d]
    return y + np.sum(gates[..., None] * routed, axis=1)
    # --- end solution
