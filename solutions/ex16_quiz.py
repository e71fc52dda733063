# stub: """Exercise 16: the MoE interview quiz.
"""Exercise 16: the MoE interview quiz (reference answers).

Learning goal: answer, with numbers and from the papers, the questions that
MoE interviews ask, including the ones our Chinese source texts (seeds 000
to 004, listed by title in the README's "Sources") answer wrongly. Several
questions quote a seed's claim (translated); the claim is the *question*,
not the answer.

How to answer: replace each `None` below. Numeric questions take a number
(an int or float; a tolerance is stated where rounding is allowed).
Multiple-choice questions take one letter, "a", "b", "c" or "d".
Everything you need is in the papers listed in the course's facts sheet
(Shazeer et al. 2017; Fedus et al. 2021 "Switch Transformers"; Zoph et al.
2022 "ST-MoE"; Zhou et al. 2022 "Expert Choice"; Jiang et al. 2024
"Mixtral"; Dai et al. 2024 "DeepSeekMoE"; Micikevicius et al. 2018
"Mixed Precision Training"), or can be computed on paper.

Run the tests: `pytest tests/exercises/test_ex16_quiz.py` (one point per question).
"""

# Q1 (multiple choice). Seed 002 lists among MoE's advantages "降低模型大小" ("reduces the model
# size": fewer parameters). Replace the feed-forward block of a dense Transformer by an MoE layer of E
# copies of that block (E = 8, top-2 routing). Which statement is right?
#   a) The model gets smaller: the big network is split into E small experts.
#   b) The total parameter count grows (about E times for that block); what stays small is the compute
#      per token, because each token runs through only k of the E experts.
#   c) Both parameters and compute per token shrink, because the experts share weights.
#   d) Parameters stay the same and compute per token grows E times, because every expert sees every token.
# stub: Q1_MOE_REDUCES_PARAMETERS = None  # one of "a", "b", "c", "d"
Q1_MOE_REDUCES_PARAMETERS = "b"

# Q2 (multiple choice). Seed 000 describes an "独立训练阶段" ("independent training stage") in which
# each expert is trained on its own. How are the experts of a sparsely-gated MoE (Shazeer 2017, Switch,
# Mixtral) actually trained?
#   a) Each expert is pre-trained separately on a subset of the data; the gate is fitted afterwards.
#   b) The gate is trained first and frozen; then each expert is trained on the tokens it receives.
#   c) Jointly and end to end: one loss, one backward pass; an expert's gradient is scaled by its gate
#      value, and the router learns through the gate values and the auxiliary balance loss.
#   d) Experts are frozen copies of a dense model; only the router is trained.
# stub: Q2_HOW_EXPERTS_ARE_TRAINED = None  # one of "a", "b", "c", "d"
Q2_HOW_EXPERTS_ARE_TRAINED = "c"

# Q3 (number, +/- 0.5). Mixtral 8x7B (Jiang et al. 2024): total parameters, in billions.
# (Not 8 * 7 = 56: the experts are only the feed-forward blocks; attention and embeddings are shared.)
# stub: Q3_MIXTRAL_TOTAL_PARAMS_BILLION = None
Q3_MIXTRAL_TOTAL_PARAMS_BILLION = 46.7

# Q4 (number, +/- 0.3). Mixtral 8x7B: parameters used (active) per token, in billions (top-2 of 8 experts).
# stub: Q4_MIXTRAL_ACTIVE_PARAMS_BILLION = None
Q4_MIXTRAL_ACTIVE_PARAMS_BILLION = 12.9

# Q5 (number). Switch Transformer's load-balancing loss is alpha * N * sum_i f_i * P_i. The value of alpha
# the paper uses (large enough to balance the load, small enough not to overwhelm the cross-entropy loss).
# stub: Q5_SWITCH_ALPHA = None
Q5_SWITCH_ALPHA = 1e-2

# Q6 (multiple choice). What is the capacity factor of Switch Transformer / GShard?
#   a) The number of experts each token is sent to.
#   b) The fraction of tokens that must be dropped in every batch.
#   c) A multiplier on the learning rate of the router.
#   d) A multiplier on each expert's buffer: capacity = capacity_factor * k * tokens / experts; above 1 it
#      leaves slack for uneven routing, and tokens routed past a full expert overflow (skip the expert
#      and are carried on by the residual connection).
# stub: Q6_CAPACITY_FACTOR = None  # one of "a", "b", "c", "d"
Q6_CAPACITY_FACTOR = "d"

# Q7 (multiple choice). Switch Transformer trains in bfloat16 but computes the router in float32
# ("selective precision"). Why?
#   a) The router's softmax exponentiates its logits, and bfloat16 round-off there made training unstable;
#      casting only the router's computation to float32 restores stability at almost no cost, and its
#      outputs are cast back to bfloat16 before dispatch.
#   b) float32 matrix multiplications are faster than bfloat16 ones on TPUs.
#   c) To save memory: the router's activations are the largest tensors of the layer.
#   d) Because bfloat16 cannot represent integers, and the router outputs expert indices.
# stub: Q7_ROUTER_IN_FLOAT32 = None  # one of "a", "b", "c", "d"
Q7_ROUTER_IN_FLOAT32 = "a"

# Q8 (multiple choice). Expert-choice routing (Zhou et al. 2022) lets each expert pick its top-c tokens,
# c = n * k / e. Why can it not be used as is for autoregressive (token-by-token) decoding?
#   a) It needs more experts than token-choice routing.
#   b) It can only route with k = 1.
#   c) An expert's choice of a token depends on the other tokens of the batch, including tokens that come
#      later in the sequence: the routing is not causal.
#   d) It drops more tokens than top-k token choice.
# stub: Q8_EXPERT_CHOICE_DECODING = None  # one of "a", "b", "c", "d"
Q8_EXPERT_CHOICE_DECODING = "c"

# Q9 (number, +/- 1e-6). Compute the (weighted) Switch balance loss alpha * E * sum_i f_i * P_i for
# E = 4 experts, alpha = 0.01, token fractions f = [0.5, 0.25, 0.125, 0.125] and mean router
# probabilities P = [0.4, 0.3, 0.2, 0.1].
# stub: Q9_SWITCH_LOSS_VALUE = None
Q9_SWITCH_LOSS_VALUE = 0.0125

# Q10 (integer). Expert capacity for a batch of T = 1024 tokens, E = 8 experts, top-2 routing,
# capacity factor 1.25 (round up).
# stub: Q10_EXPERT_CAPACITY = None
Q10_EXPERT_CAPACITY = 320

# Q11 (integer, exact). DeepSeekMoE's "fine-grained expert segmentation": instead of 16 experts with
# top-2 routing (C(16, 2) = 120 possible expert combinations per token), split each expert into 4 smaller
# ones (64 experts, top-8: same parameters, same compute). How many combinations can a token choose from?
# stub: Q11_FINE_GRAINED_COMBINATIONS = None
Q11_FINE_GRAINED_COMBINATIONS = 4426165368

# Q12 (number). The weight of the router z-loss, (1/B) * sum_x (log sum_j exp(x_j))^2, in ST-MoE.
# stub: Q12_Z_LOSS_COEFFICIENT = None
Q12_Z_LOSS_COEFFICIENT = 1e-3

# Q13 (number, +/- 1). The largest sparsely-gated MoE model of Shazeer et al. (2017), in billions of parameters.
# stub: Q13_SHAZEER_2017_MAX_PARAMS_BILLION = None
Q13_SHAZEER_2017_MAX_PARAMS_BILLION = 137

# Q14 (integer, exact). Parameters of one MoE feed-forward layer: model width d = 512, E = 8 experts,
# each expert Dense(2048, relu) -> Dense(512), both with biases, and a router Dense(8) with a bias.
# stub: Q14_MOE_FFN_TOTAL_PARAMS = None
Q14_MOE_FFN_TOTAL_PARAMS = 16801800

# Q15 (multiple choice). Seed 000 says mixed-precision training "利用浮点数和整数的组合" ("uses a
# combination of floating-point numbers and integers"). What is mixed-precision training
# (Micikevicius et al. 2018)?
#   a) Most arithmetic in float16, with a float32 master copy of the weights (updated in float32) and loss
#      scaling so that small gradients do not underflow.
#   b) Integer arithmetic for the forward pass and floating point for the backward pass.
#   c) Training some experts in float16 and the others in float32.
#   d) Quantising the trained weights to int8 after training.
# stub: Q15_MIXED_PRECISION = None  # one of "a", "b", "c", "d"
Q15_MIXED_PRECISION = "a"
