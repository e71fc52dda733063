"""`SharedExpertsMoE`: DeepSeekMoE's always-on shared experts plus fine-grained routed experts."""

import keras

from moe_tf import _checks
from moe_tf.layers.moe import MixtureOfExperts


def deepseek_moe_config(num_experts, expert_units, k, granularity, num_shared_experts=1):
    """The DeepSeekMoE layer with the same total and active size as a coarse top-k MoE.

    Fine-grained segmentation splits each of the N experts (hidden width h)
    into m = `granularity` experts of width h/m and routes each token to m*k
    of them; shared-expert isolation then turns K_s of the m*N fine experts
    into shared ones that every token uses, leaving `m*N - K_s` routed
    experts of which `m*k - K_s` are active (Dai et al. 2024, section 3).
    Total parameters and per-token expert compute equal the coarse layer's
    (up to the router, which grows from N to m*N - K_s logits).

    Args:
        num_experts: N, experts of the coarse layer.
        expert_units: h, their hidden width (divisible by `granularity`).
        k: coarse experts per token.
        granularity: m, segments per expert (1 = no segmentation).
        num_shared_experts: K_s, with `0 <= K_s < m*k`.

    Returns:
        A dict of `SharedExpertsMoE` arguments: `num_experts`, `expert_units`,
        `k`, `num_shared_experts`.

    Example:
    >>> deepseek_moe_config(num_experts=8, expert_units=128, k=2, granularity=4, num_shared_experts=1)
    {'num_experts': 31, 'expert_units': 32, 'k': 7, 'num_shared_experts': 1}
    """
    num_experts = _checks.positive_int("num_experts", num_experts)
    expert_units = _checks.positive_int("expert_units", expert_units)
    k = _checks.top_k(k, num_experts)
    m = _checks.positive_int("granularity", granularity)
    if expert_units % m:
        raise ValueError(
            f"`expert_units` must be divisible by `granularity`; received expert_units={expert_units}, granularity={m}."
        )
    if not _checks.is_int(num_shared_experts) or not 0 <= num_shared_experts < m * k:
        raise ValueError(
            f"`num_shared_experts` must be an integer with 0 <= num_shared_experts < granularity * k = {m * k}; "
            f"received num_shared_experts={num_shared_experts!r}."
        )
    return {
        "num_experts": m * num_experts - num_shared_experts,
        "expert_units": expert_units // m,
        "k": m * k - num_shared_experts,
        "num_shared_experts": int(num_shared_experts),
    }


@keras.saving.register_keras_serializable(package="moe_tf")
class SharedExpertsMoE(MixtureOfExperts):
    """Shared experts that see every token, plus top-k routed experts (DeepSeekMoE).

        y_t = sum_{s <= K_s} FFN_s(x_t) + sum_{i in TopK(s_t, k)} s_{i,t} FFN_i(x_t)
        s_t = softmax(x_t W_g)   over the routed experts

    The shared experts carry no gate: every token goes through all K_s of
    them, so they learn what all tokens need and the routed experts are
    free to specialise. It is a `MixtureOfExperts` with
    `num_shared_experts=1` by default (capacity, balance loss, z-loss and
    routing statistics as there; the shared experts read the `[T, d]` tokens
    once, not a copy per expert); by default its gates are DeepSeekMoE's,
    the raw softmax probabilities of the top k (`renormalize=False`). Build a fine-grained layer with the same size as
    a coarse top-k MoE with `deepseek_moe_config`. DeepSeek-V3 uses 1 shared
    and 256 routed experts with 8 active.

    Args:
        num_experts: routed experts.
        expert_units: hidden width of each routed expert.
        k: routed experts per token.
        num_shared_experts: K_s >= 0, always-active experts.
        shared_units: hidden width of each shared expert; defaults to `expert_units`.
        capacity_factor: of the routed experts; None = no dropping.
        output_units: output width; defaults to the input width.
        activation: hidden activation of all experts.
        renormalize: whether the k routed gates sum to 1 (DeepSeekMoE: False).
        balance_loss: routed experts' balance loss, `"switch"`, `"shazeer"` or None.
        balance_loss_weight: its weight.
        z_loss_weight: router z-loss weight.
        use_bias: experts use biases.
        kernel_initializer: experts' kernel initializer.
        router_kernel_initializer: router's; None = Switch's default.
        seed: router seed.
        **kwargs: the other arguments of `MixtureOfExperts` (`noise`,
            `dispatch`, `log_expert_load`, ...) and of a Keras layer.

    Input shape:
        `[batch, dim]` or `[batch, seq, dim]`; optional mask.

    Output shape:
        `[batch, output_units]` or `[batch, seq, output_units]`.

    Example:
    >>> moe = SharedExpertsMoE(**deepseek_moe_config(8, 128, k=2, granularity=4))  # 1 shared + top-7 of 31
    >>> tuple(moe(np.random.rand(4, 16, 64).astype("float32")).shape)
    (4, 16, 64)
    """

    def __init__(self, num_experts, expert_units, k, num_shared_experts=1, renormalize=False, **kwargs):
        num_experts = _checks.positive_int("num_experts", num_experts)
        super().__init__(
            num_experts,
            expert_units,
            k=_checks.top_k(k, num_experts),
            num_shared_experts=num_shared_experts,
            renormalize=renormalize,
            **kwargs,
        )
