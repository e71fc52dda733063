# --- solution
# stub: """Exercise 15: the bug museum.
# stub:
# stub: Learning goal: recognise, from its symptom, the mistakes that MoE code really
# stub: contains, and repair them. Each exhibit is a small function or layer holding
# stub: one bug (sometimes two), re-expressed faithfully in TensorFlow/Keras: first
# stub: the code samples of this course's Chinese source texts (seeds 000 to 004,
# stub: listed by title in the README's "Sources"; not distributed with the course),
# stub: then mistakes that public MoE code has made or that its authors had to guard
# stub: against.
# stub:
# stub: Every exhibit in this file is broken. Read its docstring (the story and the
# stub: symptom), run the tests, and fix the code in place: keep the names and
# stub: signatures, change as little as you can. A test's failure message names the
# stub: symptom it detected.
# stub:
# stub: Run the tests: `pytest tests/exercises/test_ex15_bug_museum.py`.
# stub:
# stub: Exhibits:
# stub:     A  make_selector              a softmax over one unit (seed 002)
# stub:     B  fusion                     silent broadcasting in a "weighted sum" (seed 002)
# stub:     C  seed001_moe_output         concatenation + mean instead of a mixture (seed 001)
# stub:     D  build_two_expert_classifier  an "MoE" classifier with no gate (seed 003)
# stub:     E  seed004_forward            torch.mean over the experts, gate ignored (seed 004)
# stub:     F  capacity_positions         inclusive cumsum: one slot per expert lost
# stub:     G  dispatch_and_combine       gates in the dispatch tensor: inputs scaled twice
# stub:     H  combine_top1               dropped tokens leak input * gate
# stub:     I  BalancedRouter             the balance loss computed and never added
# stub: """
"""Exercise 15: the bug museum (reference solution: every exhibit repaired).

Learning goal: recognise, from its symptom, the mistakes that MoE code really
contains, and repair them. Each exhibit is a small function or layer holding
one bug (sometimes two), re-expressed faithfully in TensorFlow/Keras: first
the code samples of this course's Chinese source texts (seeds 000 to 004,
listed by title in the README's "Sources"; not distributed with the course),
then mistakes that public MoE code has made or that its authors had to guard
against.

In `exercises/ex15_bug_museum.py` every exhibit is broken. Read the
docstring (the story and the symptom), run the tests, and fix the code in
place: keep the names and signatures, change as little as you can. The
comments marked `FIX` below show what changed.

Run the tests: `pytest tests/exercises/test_ex15_bug_museum.py`.

Exhibits:
    A  make_selector              a softmax over one unit (seed 002)
    B  fusion                     silent broadcasting in a "weighted sum" (seed 002)
    C  seed001_moe_output         concatenation + mean instead of a mixture (seed 001)
    D  build_two_expert_classifier  an "MoE" classifier with no gate (seed 003)
    E  seed004_forward            torch.mean over the experts, gate ignored (seed 004)
    F  capacity_positions         inclusive cumsum: one slot per expert lost
    G  dispatch_and_combine       gates in the dispatch tensor: inputs scaled twice
    H  combine_top1               dropped tokens leak input * gate
    I  BalancedRouter             the balance loss computed and never added
"""
# --- end solution

import keras
import tensorflow as tf
from keras import ops


# ---------------------------------------------------------------------------
# Exhibit A: the selector that always says 1
# ---------------------------------------------------------------------------
def make_selector(num_experts):
    """Return a layer mapping `[B, d]` features to gate weights `[B, num_experts]` (rows sum to 1).

    Provenance: seed 002, coding task "design an MoE
    text classifier", whose selector ends in
    `x = Dense(units=1, activation='softmax')(x)`.

    Symptom: a softmax over a single number is exp(z)/exp(z) = 1, whatever z.
    The "selector" outputs 1.0 for every input, so it never selects, and its
    weights get no gradient (the derivative of a constant is 0). Keras even
    warns about a softmax over an axis of size 1.

    Example:
    >>> make_selector(2)(np.ones((3, 5), "float32")).shape
    TensorShape([3, 2])
    """
    # --- solution
    # stub: return keras.layers.Dense(1, activation="softmax")
    # FIX: one unit per expert; the softmax then runs across the experts.
    return keras.layers.Dense(num_experts, activation="softmax")
    # --- end solution


# ---------------------------------------------------------------------------
# Exhibit B: a "weighted sum" that broadcasts along the wrong axes
# ---------------------------------------------------------------------------
def fusion(expert_outputs, weights):
    """Gate-weighted sum of the experts' outputs.

    Args:
        expert_outputs: a Python list of E tensors, each `[B, d]`.
        weights: `[B, E]` gate weights (row b: how much token b trusts each expert).

    Returns:
        `[B, d]`: `y[b] = sum_e weights[b, e] * expert_outputs[e][b]`.

    Provenance: seed 002, coding task 1 (a two-expert
    MoE), whose `fusion` is commented "simple weighted sum" (简单的加权求和):
    `return tf.reduce_sum(tf.multiply(outputs, weights), axis=0)`, with
    `weights = selector(inputs)` read from a global and not even normalised.

    Symptom: `tf.multiply` of the stacked outputs `[E, B, d]` by `[B, E]`
    aligns the *trailing* axes, so it multiplies feature j of token b by
    `weights[b', j]`: with the seed's own example (B = d = E = 2) it runs and
    returns wrong numbers; with any other shape it crashes.

    Example:
    >>> fusion([tf.ones((1, 3)), 2 * tf.ones((1, 3))], tf.constant([[0.25, 0.75]]))
    # [[1.75, 1.75, 1.75]]
    """
    # --- solution
    # stub: return tf.reduce_sum(tf.multiply(expert_outputs, weights), axis=0)
    # FIX: put the experts on axis 1 and give the weights an explicit feature axis.
    stacked = tf.stack(expert_outputs, axis=1)  # [B, E, d]
    return tf.reduce_sum(stacked * weights[:, :, None], axis=1)  # [B, d]
    # --- end solution


# ---------------------------------------------------------------------------
# Exhibit C: concatenate, multiply, add a mean, and call it a mixture
# ---------------------------------------------------------------------------
def seed001_moe_output(expert_outputs, mixture_logits):
    """The output of an MoE: experts mixed by the softmax of the gating network's logits.

    Args:
        expert_outputs: a Python list of E tensors, each `[B, o]`.
        mixture_logits: `[B, E]` logits of the gating ("mixture") network.

    Returns:
        `[B, o]`: `sum_e softmax(mixture_logits)[:, e] * expert_outputs[e]`.

    Provenance: seed 001, section 5.2 ("MoE for
    machine translation"), `MOE.call`:
    `return tf.concat(expert_outputs, axis=1) * mixture_outputs + tf.reduce_mean(expert_outputs, axis=1)`,
    where `mixture_outputs` is the gating network's raw output reshaped to
    `[-1, 1]`.

    Symptom: three bugs in one line. Concatenation glues the experts side by
    side (`[B, E*o]`) instead of mixing them; the gate is a raw, unnormalised
    score reshaped into a column that no longer lines up with the tokens; and
    `reduce_mean(..., axis=1)` averages over the *batch*, mixing different
    examples together. It crashes for almost every shape, and where it runs
    the result is not a mixture.
    """
    # --- solution
    # stub: mixture_outputs = tf.reshape(mixture_logits, [-1, 1])
    # stub: return tf.concat(expert_outputs, axis=1) * mixture_outputs + tf.reduce_mean(expert_outputs, axis=1)
    # FIX: softmax the logits into gates, stack the experts, weighted sum over the expert axis.
    gates = tf.nn.softmax(mixture_logits, axis=-1)  # [B, E]
    stacked = tf.stack(expert_outputs, axis=1)  # [B, E, o]
    return tf.reduce_sum(gates[:, :, None] * stacked, axis=1)  # [B, o]
    # --- end solution


# ---------------------------------------------------------------------------
# Exhibit D: an "MoE" classifier without a gate
# ---------------------------------------------------------------------------
def build_two_expert_classifier(input_dim, num_classes, units=32):
    """A two-expert MoE classifier (functional Keras model).

    Layers (the tests look them up by name): `expert_0`, `expert_1`
    (`Dense(units, relu)` on the input), `gate` (`Dense(2, softmax)` on the
    input), `head` (`Dense(num_classes, softmax)` on the mixture).
    Mixture: `m = gate[:, 0:1] * expert_0(x) + gate[:, 1:2] * expert_1(x)`.
    Output: `head(m)`, `[B, num_classes]`.

    Provenance: seed 003, coding task 2 (an MoE image
    classifier): two `Dense(128, activation='relu')` experts combined by
    `moe_output = tf.keras.layers.Attention()([expert1, expert2])`, commented
    "weighted average" (加权平均). Nothing looks at the input to decide which
    expert to trust: that is an ensemble (or an attention between two
    feature vectors), not a mixture of experts. Here it is re-expressed as
    the equal-weight average it amounts to.

    Symptom: every input gets the same 50/50 blend; there is no gate to
    inspect, to train or to make sparse.
    """
    inputs = keras.Input(shape=(input_dim,))
    expert_0 = keras.layers.Dense(units, activation="relu", name="expert_0")(inputs)
    expert_1 = keras.layers.Dense(units, activation="relu", name="expert_1")(inputs)
    # --- solution
    # stub: mixed = keras.layers.Average(name="weighted_average")([expert_0, expert_1])
    # FIX: a gate computed from the input, and a gate-weighted sum instead of Average().
    gate = keras.layers.Dense(2, activation="softmax", name="gate")(inputs)  # [B, 2]
    mixed = gate[:, 0:1] * expert_0 + gate[:, 1:2] * expert_1  # [B, units]
    # --- end solution
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="head")(mixed)
    return keras.Model(inputs, outputs, name="two_expert_classifier")


# ---------------------------------------------------------------------------
# Exhibit E: torch.mean over a list of experts
# ---------------------------------------------------------------------------
def seed004_forward(expert_outputs, gates):
    """Combine E expert outputs with the router's gates.

    Args:
        expert_outputs: a Python list of E tensors, each `[B, 1]`.
        gates: `[B, E]` router probabilities (rows sum to 1).

    Returns:
        `[B, 1]`: `sum_e gates[:, e] * expert_outputs[e]`.

    Provenance: seed 004, coding task 4, `MoE.forward`:
    `outputs = [expert(x) for expert in self.experts]`,
    `mean_output = torch.mean(outputs, dim=0)`, then `self.fc(mean_output)`
    with `fc = nn.Linear(num_experts, 1)`. (`torch.mean` of a Python list
    raises a TypeError, and after the mean there is one feature, not
    num_experts, for `fc`.) The seed has no gate at all; here the gate is
    handed in and ignored, which is the same bug in a form that runs.

    Symptom: the output is the plain average of the experts for every input,
    and the router gets no gradient (`tape.gradient(..., gates)` is None).
    """
    stacked = tf.stack(expert_outputs, axis=0)  # [E, B, 1]
    # --- solution
    # stub: mean_output = tf.reduce_mean(stacked, axis=0)  # [B, 1]
    # stub: return mean_output
    # FIX: weight each expert by its gate instead of tf.reduce_mean(stacked, axis=0).
    return tf.einsum("be,ebo->bo", gates, stacked)
    # --- end solution


# ---------------------------------------------------------------------------
# Exhibit F: the inclusive cumsum
# ---------------------------------------------------------------------------
def capacity_positions(expert_index, num_experts, capacity):
    """Top-1 capacity: each token's slot in its expert's buffer, and whether it fits.

    Args:
        expert_index: `[T]` int, the expert chosen by each token.
        num_experts: E.
        capacity: C, slots per expert.

    Returns:
        `(positions, keep)`: `[T]` int32 slot of each token in its expert
        (the first token sent to an expert gets slot 0, the next slot 1, ...),
        and `[T]` float32, 1 where `position < capacity`, else 0 (dropped).

    Provenance: the GShard/Switch recipe ranks the tokens sent to each expert
    with a cumulative sum of the one-hot assignments. It must be an
    *exclusive* cumsum: Mesh TensorFlow and lucidrains/mixture-of-experts use
    `cumsum_exclusive` (see that repository's issue #4, "why need an
    exclusive cumsum in gating method?").

    Symptom: an inclusive cumsum starts counting at 1, so slot 0 is never
    used and every expert keeps only C - 1 tokens: a token is dropped at
    every expert that fills up, even at capacity_factor 1 with perfectly
    balanced routing.
    """
    mask = tf.one_hot(expert_index, num_experts, dtype=tf.int32)  # [T, E]
    # --- solution
    # stub: positions = tf.reduce_sum(tf.cumsum(mask, axis=0) * mask, axis=1)  # [T]
    # FIX: exclusive=True, so the first token in each expert is at position 0.
    positions = tf.reduce_sum(tf.cumsum(mask, axis=0, exclusive=True) * mask, axis=1)  # [T]
    # --- end solution
    keep = tf.cast(positions < capacity, tf.float32)
    return positions, keep


# ---------------------------------------------------------------------------
# Exhibit G: a dispatch tensor that carries the gates
# ---------------------------------------------------------------------------
def dispatch_and_combine(expert_index, gate, positions, keep, num_experts, capacity):
    """GShard/Switch routing tensors for top-1 routing.

    Args:
        expert_index: `[T]` int chosen expert; gate: `[T]` its gate value;
        positions: `[T]` int slot; keep: `[T]` 1 = kept, 0 = dropped;
        num_experts: E; capacity: C.

    Returns:
        `(dispatch, combine)`, both `[T, E, C]` float32. `dispatch[t, e, c]`
        is 1 when token t sits in slot c of expert e, else 0 (binary);
        `combine` holds the gate at the same places. Experts then see
        `einsum("tec,td->ecd", dispatch, x)` and the layer returns
        `einsum("tec,ecd->td", combine, expert_out)`.

    Provenance: in GShard/Switch-style code the dispatch tensor is the
    combine tensor cast to boolean: the gate is applied once, on the way out.

    Symptom: with `dispatch = combine`, expert e receives `gate * x` instead
    of `x`, and its output is multiplied by the gate again, so a token
    contributes `gate * f(gate * x)`: for a nonlinear expert, not the
    mixture at all, and a gradient path through the router that should not
    exist.
    """
    expert_one_hot = tf.one_hot(expert_index, num_experts, dtype=tf.float32)  # [T, E]
    slot_one_hot = tf.one_hot(positions, capacity, dtype=tf.float32)  # [T, C]; out of range -> zeros
    routed = expert_one_hot[:, :, None] * slot_one_hot[:, None, :] * tf.cast(keep, tf.float32)[:, None, None]
    combine = tf.cast(gate, tf.float32)[:, None, None] * routed
    # --- solution
    # stub: dispatch = combine
    # FIX: dispatch is binary: where a token goes, not how much it counts.
    dispatch = routed
    # --- end solution
    return dispatch, combine


# ---------------------------------------------------------------------------
# Exhibit H: dropped tokens that leak through
# ---------------------------------------------------------------------------
def combine_top1(tokens, expert_outputs, gate, keep):
    """Output of a top-1 MoE layer with capacity.

    Args:
        tokens: `[T, d]` the layer's inputs.
        expert_outputs: `[T, d]` the output of each token's expert (garbage
            where the token was dropped).
        gate: `[T]` gate of each token's expert.
        keep: `[T]` 1 = processed, 0 = dropped (over capacity).

    Returns:
        `[T, d]`: `gate * expert_output` for kept tokens and exactly 0 for
        dropped ones. The block around the layer computes `x + moe(x)`, and
        that residual connection is what carries a dropped token on
        unchanged (Switch Transformer, GShard).

    Provenance: DeepSpeed issue #1395 ("The discard mechanism of MoE layer
    seems wrong", 2021) asked why dropped tokens come out as zeros and
    pointed to an implementation that passes them through instead; the
    answer was that zeros are right because the residual connection
    restores them.

    Symptom: returning `gate * x` for dropped tokens means the block outputs
    `x + gate * x = (1 + gate) x`: every dropped token is rescaled by an
    amount that depends on the router, and the router gets a gradient from
    tokens no expert processed.
    """
    kept = tf.cast(keep, tokens.dtype)[:, None] > 0
    weighted = tf.cast(gate, tokens.dtype)[:, None] * expert_outputs
    # --- solution
    # stub: return tf.where(kept, weighted, tf.cast(gate, tokens.dtype)[:, None] * tokens)
    # FIX: a dropped token contributes exactly 0 (not gate * token); the residual passes it on.
    return tf.where(kept, weighted, tf.zeros_like(weighted))
    # --- end solution


# ---------------------------------------------------------------------------
# Exhibit I: the balance loss that nobody adds
# ---------------------------------------------------------------------------
class BalancedRouter(keras.layers.Layer):
    """Top-1 router with the Switch balance loss.

    `call(x)` (`x [T, d]`) returns the router probabilities `[T, E]` and adds
    `alpha * E * sum_i f_i * P_i` to the layer's losses with `add_loss`
    (`f_i`: fraction of tokens whose top-1 expert is i; `P_i`: mean
    probability of expert i). `self.last_balance_loss` keeps the value for
    logging.

    Provenance: jingyaogong/minimind issue #140 (2025): "the MoE aux_loss is
    computed but never used"; the author answered that they had forgotten it
    halfway through training the MoE and retraining was too expensive.
    (NVIDIA-NeMo/Automodel issue #1408 reports the same outcome by another
    route: an aux-loss gradient that never reached the router.)

    Symptom: the loss shows up in logs, but `layer.losses` is empty, so
    `model.fit` (or any optimiser) never sees it: the router is never pushed
    towards balance, and a collapsed router stays collapsed.
    """

    def __init__(self, num_experts, alpha=1e-2, **kwargs):
        super().__init__(**kwargs)
        self.num_experts = num_experts
        self.alpha = alpha
        self.last_balance_loss = None

    def build(self, input_shape):
        self.kernel = self.add_weight(
            name="kernel", shape=(input_shape[-1], self.num_experts), initializer="glorot_uniform"
        )

    def call(self, x):
        probs = ops.softmax(ops.matmul(x, self.kernel), axis=-1)  # [T, E]
        chosen = ops.one_hot(ops.argmax(probs, axis=-1), self.num_experts)  # [T, E]
        f = ops.mean(chosen, axis=0)
        P = ops.mean(probs, axis=0)
        aux = self.alpha * self.num_experts * ops.sum(f * P)
        self.last_balance_loss = aux
        # --- solution only
        # FIX: hand the loss to Keras; computing it is not enough.
        self.add_loss(aux)
        # --- end solution
        return probs
