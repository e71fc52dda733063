"""Wrong solutions of exercise 2 that tests/exercises/test_ex02_param_count.py must fail (tests/course/test_mutants.py).

Each entry is ``(name, old, new)``: ``old`` occurs exactly once in solutions/ex02_param_count.py and
``new`` replaces it with one classic mistake that contradicts the stub's docstring.
"""

MUTANTS = [
    # The documented router_bias option never reaches the router count.
    (
        "router_bias_ignored",
        "router = router_params(d, num_experts, use_bias=router_bias, noisy=noisy_router)",
        "router = router_params(d, num_experts, noisy=noisy_router)",
    ),
    # The FLOPs assume d_out = d whatever the caller passes.
    (
        "flops_ignore_d_out",
        "return 2 * d * h + 2 * h * d_out + (2 * d * h if gated else 0)",
        "return 2 * d * h + 2 * h * d + (2 * d * h if gated else 0)",
    ),
    # Active parameters without the router: but every token is scored against every expert.
    ("active_forgets_the_router", '"active": router + k * per_expert,', '"active": k * per_expert,'),
    # A gated expert's third projection without its bias.
    ("gated_expert_forgets_the_third_bias", "params += h + d_out + (h if gated else 0)", "params += h + d_out"),
    # moe_flops_per_token accepts k = 0 or k > E instead of raising the documented ValueError.
    (
        "flops_do_not_check_k",
        '        raise ValueError(f"k must be in [1, num_experts={num_experts}]; got k={k}")\n'
        "    return 2 * d * num_experts",
        "        pass\n    return 2 * d * num_experts",
    ),
    # Only k = E is refused: k = 0 divides the expert share by E instead of failing.
    ("split_accepts_k_zero", "if not 1 <= k < num_experts:", "if not k < num_experts:"),
]
