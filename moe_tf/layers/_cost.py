"""What a layer costs: the parameters it holds, and the parameters and FLOPs one token uses.

Every MoE layer of the library (and `TransformerBlock`) has a `cost()` method
returning a `LayerCost`; `moe_tf.cost.model_cost` adds them up over a
model. Conventions (the ones the MoE papers use when they quote "active
parameters"):

- FLOPs are 2 × the multiply-adds of the matrix multiplications of one
  token's inference forward pass; biases, activations, normalisation,
  softmax and data movement (dispatch, gathers) are not counted;
- a token's *active* parameters are the weights its forward pass reads: the
  router and the k experts it is sent to, all of a dense layer, all of an
  embedding table (as Switch and Mixtral count them), all of a Soft MoE (every
  token is mixed into every slot); expert-choice routing gives a token
  `E * c / n` experts on average, a fraction.
"""

from typing import NamedTuple


class LayerCost(NamedTuple):
    """The cost of one layer.

    Attributes:
        total_params: every weight the layer holds (an int; equals `layer.count_params()`).
        active_params: the weights one token's forward pass uses (a float for expert choice).
        flops_per_token: 2 × matmul multiply-adds per token, inference forward pass.
    """

    total_params: int
    active_params: float
    flops_per_token: float


def expert_sizes(experts, dim):
    """`(params of one expert, multiply-adds of one expert path)` of a `moe_tf.layers.Experts` on width `dim`."""
    h, o = experts.units, experts.output_kernel.shape[-1]
    params = dim * h + h * o + ((h + o) if experts.use_bias else 0)
    return params, dim * h + h * o


def router_sizes(router):
    """`(trainable params, params one token uses)` of a linear router (`TopKRouter`, `ExpertChoiceRouter`).

    The noise kernel of Gaussian noise is a parameter but is not used at
    inference; the selection bias of auxiliary-loss-free balancing is not a
    parameter (no gradient) and is not counted.
    """
    d, E = router.kernel.shape
    active = d * E + (E if getattr(router, "use_bias", False) else 0)  # expert choice: a kernel only
    return active + (d * E if getattr(router, "noise", "none") == "gaussian" else 0), active


def routed_cost(router, expert_params, expert_path, experts_per_token):
    """`LayerCost` of a router plus its E experts, `experts_per_token` of them used per token.

    Args:
        router: the `TopKRouter` (`[d, E]` kernel).
        expert_params: parameters of one expert.
        expert_path: multiply-adds of one expert on one token.
        experts_per_token: k; E for a dense mixture; a fraction for expert choice.
    """
    d, E = router.kernel.shape
    router_total, router_active = router_sizes(router)
    return LayerCost(
        router_total + E * expert_params,
        router_active + experts_per_token * expert_params,
        2 * (d * E + experts_per_token * expert_path),
    )


def dense_sizes(layer):
    """`(params, multiply-adds per token)` of a `keras.layers.Dense`."""
    d_in, units = layer.kernel.shape
    return d_in * units + (units if layer.use_bias else 0), d_in * units
