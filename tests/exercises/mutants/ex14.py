"""Wrong solutions of exercise 14 (the Keras MoE layer) that tests/exercises/test_ex14_moe_layer.py must fail.

Each mutant is `(name, old, new)`: `old` occurs exactly once in solutions/ex14_moe_layer.py and is replaced
by `new`, giving one classic mistake that contradicts the stub's docstring.
"""

MUTANTS = [
    (
        "top1_gate_renormalised_to_1",  # Switch keeps the raw probability p for k = 1
        "if self.k > 1:",
        "if self.k >= 1:",
    ),
    (
        "fraction_over_tokens_not_assignments",  # f_i sums to k: only k = 1 hides it
        "fraction = ops.sum(chosen, axis=0) / ops.sum(chosen)  # f_i",
        "fraction = ops.mean(chosen, axis=0)  # f_i",
    ),
    (
        "fraction_from_the_first_choice_only",
        'chosen = ops.sum(ops.one_hot(indices, self.num_experts, dtype="float32"), axis=1)  # [T, E]',
        'chosen = ops.one_hot(indices[:, 0], self.num_experts, dtype="float32")  # [T, E]',
    ),
    (
        "activation_argument_ignored",
        'hidden = self.activation(ops.einsum("td,edh->teh", inputs, self.w1) + self.b1)  # [T, E, h]',
        'hidden = ops.relu(ops.einsum("td,edh->teh", inputs, self.w1) + self.b1)  # [T, E, h]',
    ),
    (
        "k_above_num_experts_accepted",
        "if not 1 <= int(k) <= int(num_experts):",
        "if int(k) < 1:",
    ),
    (
        "router_in_the_input_dtype",  # under mixed_float16 the router softmax runs in float16
        'logits = ops.matmul(ops.cast(x, "float32"), self.router_kernel)  # [T, E], float32',
        "logits = ops.matmul(x, ops.cast(self.router_kernel, x.dtype))  # [T, E]",
    ),
]
