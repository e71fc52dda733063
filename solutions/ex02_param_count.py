"""Exercise 2: total vs active parameters and FLOPs of a Mixture-of-Experts layer.

Learning goal: count what an MoE layer *stores* (all E experts) and what one
token *uses* (the router and its k experts), and turn that into the classic
interview answer about Mixtral.

The layer: E experts, each a feed-forward network d -> h -> d_out (two
kernels, and optionally a bias after each), and a linear router x W_g with
W_g of shape [d, E] (optionally + a bias of E, and a second [d, E] kernel
W_noise for Shazeer's noisy gating). For E experts of d -> h -> d with biases
the layer has

    total  = E * (2*d*h + h + d) + d*E        (+ E for a router bias)
    active = k * (2*d*h + h + d) + d*E        (parameters one token touches)

so compute per token is about k/E of running every expert, while memory holds
all E. FLOPs convention in this exercise: count matrix multiplications only,
2 FLOPs per multiply-add (a [1, m] @ [m, n] product costs 2*m*n); biases,
activations and the softmax are ignored.

References: Shazeer et al. (2017), "Outrageously Large Neural Networks: The
Sparsely-Gated Mixture-of-Experts Layer"; Jiang et al. (2024), "Mixtral of
Experts" (8 experts per layer, top-2: 46.7B total, 12.9B active parameters
per token).

Plain Python integers and floats are all you need here.
"""


def expert_params(d, h, d_out=None, use_bias=True, gated=False):
    """Parameters of one feed-forward expert.

    A plain expert is `W1 [d, h]`, `b1 [h]`, `W2 [h, d_out]`, `b2 [d_out]`.
    A gated (SwiGLU, as in Mixtral) expert has a third kernel `W3 [d, h]`
    (and with biases a third bias `[h]`): `W2 (silu(x W1) * (x W3))`.

    Args:
        d: input width.
        h: hidden width.
        d_out: output width; None means `d`.
        use_bias: whether the projections have biases.
        gated: a SwiGLU expert with three kernels instead of two.

    Returns:
        An int.

    Example:
        >>> expert_params(4, 8)                 # 4*8 + 8 + 8*4 + 4
        76
        >>> expert_params(4, 8, use_bias=False, gated=True)   # 3 * 4*8
        96
    """
    # --- solution
    d_out = d if d_out is None else d_out
    params = d * h + h * d_out + (d * h if gated else 0)
    if use_bias:
        params += h + d_out + (h if gated else 0)
    return params
    # --- end solution


def router_params(d, num_experts, use_bias=False, noisy=False):
    """Parameters of the linear router: `W_g [d, E]` (+ bias `[E]`) (+ `W_noise [d, E]`).

    Args:
        d: input width.
        num_experts: E.
        use_bias: the router adds a bias to its logits.
        noisy: Shazeer's noisy top-k router with a second kernel W_noise
            (no bias) that sets the per-expert noise scale.

    Returns:
        An int.

    Example:
        >>> router_params(4, 3)                 # 4*3
        12
        >>> router_params(4, 3, use_bias=True, noisy=True)   # 12 + 3 + 12
        27
    """
    # --- solution
    return d * num_experts + (num_experts if use_bias else 0) + (d * num_experts if noisy else 0)
    # --- end solution


def moe_param_counts(
    d, h, num_experts, k, d_out=None, use_bias=True, router_bias=False, noisy_router=False, gated=False
):
    """Total and active (per-token) parameters of an MoE feed-forward layer.

    `total` counts every weight the layer stores: the router and all E
    experts. `active` counts the weights one token's forward pass touches: the
    router (every token is scored against every expert) and k experts.

    Args:
        d, h, d_out, use_bias, gated: each expert's shape, as in `expert_params`.
        num_experts: E.
        k: experts per token, 1 <= k <= E.
        router_bias, noisy_router: the router's options, as in `router_params`.

    Returns:
        A dict of ints with keys `"per_expert"`, `"router"`, `"total"` and
        `"active"`.

    Example:
        >>> moe_param_counts(d=4, h=8, num_experts=3, k=1)
        {'per_expert': 76, 'router': 12, 'total': 240, 'active': 88}
    """
    # --- solution
    if not 1 <= k <= num_experts:
        raise ValueError(f"k must be in [1, num_experts={num_experts}]; got k={k}")
    per_expert = expert_params(d, h, d_out=d_out, use_bias=use_bias, gated=gated)
    router = router_params(d, num_experts, use_bias=router_bias, noisy=noisy_router)
    return {
        "per_expert": per_expert,
        "router": router,
        "total": router + num_experts * per_expert,
        "active": router + k * per_expert,
    }
    # --- end solution


def ffn_flops_per_token(d, h, d_out=None, gated=False):
    """Matmul FLOPs of one feed-forward network (one expert, or a dense FFN) for one token.

    Two FLOPs per multiply-add: `2*d*h + 2*h*d_out` for a plain FFN, plus
    `2*d*h` for the third kernel of a gated one.

    Args:
        d, h, d_out, gated: as in `expert_params`.

    Returns:
        An int.

    Example:
        >>> ffn_flops_per_token(4, 8)           # 2*4*8 + 2*8*4
        128
    """
    # --- solution
    d_out = d if d_out is None else d_out
    return 2 * d * h + 2 * h * d_out + (2 * d * h if gated else 0)
    # --- end solution


def moe_flops_per_token(d, h, num_experts, k, d_out=None, gated=False):
    """Matmul FLOPs of the MoE layer for one token: the router plus k experts.

    The router is a `[1, d] @ [d, E]` product (`2*d*E`); then the token runs
    through k experts. Dispatch and combine (gathers and a k-term weighted
    sum) are ignored. With k = E this is the dense mixture, where every
    expert runs on every token.

    Args:
        d, h, d_out, gated: each expert's shape, as in `expert_params`.
        num_experts: E.
        k: experts per token, 1 <= k <= E.

    Returns:
        An int.

    Example:
        >>> moe_flops_per_token(d=4, h=8, num_experts=3, k=1)   # 2*4*3 + 1 * 128
        152
        >>> moe_flops_per_token(d=4, h=8, num_experts=3, k=3)   # dense mixture: 24 + 3 * 128
        408
    """
    # --- solution
    if not 1 <= k <= num_experts:
        raise ValueError(f"k must be in [1, num_experts={num_experts}]; got k={k}")
    return 2 * d * num_experts + k * ffn_flops_per_token(d, h, d_out=d_out, gated=gated)
    # --- end solution


def split_shared_and_expert(total, active, num_experts, k):
    """Recovers a sparse model's shared and expert parameters from its total/active counts.

    The classic interview question: Mixtral 8x7B routes each token to 2 of 8
    experts, yet 12.9B / 46.7B = 0.276, not 2/8 = 0.25. Why? Only the expert
    FFNs are replicated; attention, embeddings, norms and routers are *shared*
    and every token uses all of them. With S shared parameters and X
    parameters per expert "slot" (one expert in every layer):

        total  = S + E * X
        active = S + k * X

    Solve these two equations.

    Args:
        total: total parameters of the model.
        active: parameters used per token.
        num_experts: E experts per MoE layer.
        k: experts per token, k < E.

    Returns:
        `(shared, experts_total)`: S and E * X (floats), summing to `total`.

    Example:
        >>> split_shared_and_expert(46.7e9, 12.9e9, num_experts=8, k=2)
        (1633333333.3333..., 45066666666.666...)       # ~1.6B shared, ~45.1B in experts
    """
    # --- solution
    if not 1 <= k < num_experts:
        raise ValueError(
            f"need 1 <= k < num_experts to separate shared from expert parameters; got k={k}, num_experts={num_experts}"
        )
    per_slot = (total - active) / (num_experts - k)
    experts_total = num_experts * per_slot
    return total - experts_total, experts_total
    # --- end solution
