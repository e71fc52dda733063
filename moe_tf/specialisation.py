"""Measuring expert specialisation: which classes each expert takes, and how much the routing says about the class.

Once a router is trained, every example has a first-choice expert (the argmax
of its gates). Cross that with the examples' labels and you get a
`[classes, experts]` count table, the routing "confusion matrix":

    counts = assignment_matrix(labels, first_choice, num_classes=10, num_experts=8)
    fractions = assignment_matrix(labels, first_choice, 10, 8, normalize="row")  # rows sum to 1
    report = specialisation_report(counts)   # MI, H(expert), H(expert | class), in bits

The mutual information between the class and the expert,

    I(C; E) = H(E) - H(E | C) = sum_{c,e} p(c,e) log2( p(c,e) / (p(c) p(e)) ),

is the specialisation measure: 0 bits when the expert a router picks is
independent of the class (a uniform router, or one that sends everything to
one expert), at most `min(H(C), log2 E)` bits when the expert determines the
class or vice versa. Its two terms tell the two failure modes apart:
`H(E)` small means collapse (few experts used at all), `H(E | C)` large
means each class is smeared over many experts.

Everything here is plain NumPy: the tables are small once a model is trained.
"""

import numpy as np

__all__ = ["assignment_matrix", "entropy_bits", "mutual_information", "specialisation_report"]

_NORMALIZE = (None, "row", "joint")


def _int_vector(name, value):
    array = np.asarray(value)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"`{name}` must be a non-empty 1-D array of integer ids; received shape {array.shape}.")
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"`{name}` must hold integer ids; received dtype {array.dtype}.")
    if array.min() < 0:
        raise ValueError(f"`{name}` must be >= 0; received a value {int(array.min())}.")
    return array.astype(np.int64)


def _size(name, value, ids, ids_name):
    if value is None:
        return int(ids.max()) + 1
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer or None; received {name}={value!r}.")
    if ids.max() >= value:
        raise ValueError(f"`{ids_name}` must be < {name}={value}; received a value {int(ids.max())}.")
    return int(value)


def _counts(matrix):
    table = np.asarray(matrix, dtype=np.float64)
    if table.ndim != 2 or 0 in table.shape:
        raise ValueError(f"`counts` must be a non-empty 2-D array [classes, experts]; received shape {table.shape}.")
    if not np.all(np.isfinite(table)) or table.min() < 0:
        raise ValueError("`counts` must hold finite, non-negative numbers (counts or probabilities).")
    if table.sum() <= 0:
        raise ValueError("`counts` must have a positive total; received an all-zero table.")
    return table


def assignment_matrix(labels, experts, num_classes=None, num_experts=None, normalize=None):
    """Cross-tabulates labels against the expert each example was routed to.

    Args:
        labels: `[N]` integer class ids.
        experts: `[N]` integer expert ids (e.g. `argmax(gates, axis=-1)`, the first choice).
        num_classes: rows C; None means `max(labels) + 1`.
        num_experts: columns E; None means `max(experts) + 1`.
        normalize: None for counts; `"row"` for the fraction of each class's
            examples that went to each expert (rows sum to 1; a class without
            examples gets a row of NaN); `"joint"` for the joint distribution
            `p(class, expert)` (the whole table sums to 1).

    Returns:
        A float64 array `[C, E]`.

    Example:
    >>> assignment_matrix([0, 0, 1, 1], [1, 1, 0, 1], normalize="row")
    array([[0. , 1. ],
           [0.5, 0.5]])
    """
    labels = _int_vector("labels", labels)
    experts = _int_vector("experts", experts)
    if labels.shape != experts.shape:
        raise ValueError(
            f"`labels` and `experts` must have the same length, one expert id per example; "
            f"received {labels.shape[0]} labels and {experts.shape[0]} expert ids."
        )
    if normalize not in _NORMALIZE:
        raise ValueError(f"`normalize` must be one of {_NORMALIZE}; received normalize={normalize!r}.")
    rows = _size("num_classes", num_classes, labels, "labels")
    cols = _size("num_experts", num_experts, experts, "experts")
    table = np.zeros((rows, cols))
    np.add.at(table, (labels, experts), 1.0)
    if normalize == "joint":
        return table / table.sum()
    if normalize == "row":
        with np.errstate(invalid="ignore", divide="ignore"):
            return table / table.sum(axis=1, keepdims=True)
    return table


def entropy_bits(p, axis=-1):
    """Shannon entropy `-sum p log2 p` in bits along `axis` (`0 log 0 = 0`); `p` is normalised first.

    Example:
    >>> float(entropy_bits([0.5, 0.25, 0.25]))
    1.5
    """
    p = np.asarray(p, dtype=np.float64)
    if p.size == 0 or not np.all(np.isfinite(p)) or p.min() < 0:
        raise ValueError("`p` must be a non-empty array of finite, non-negative numbers.")
    total = p.sum(axis=axis, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        q = p / total
        terms = np.where(q > 0, -q * np.log2(np.where(q > 0, q, 1.0)), 0.0)
    return terms.sum(axis=axis)


def mutual_information(counts):
    """Mutual information `I(C; E)` in bits of a `[classes, experts]` count (or probability) table.

    Example:
    >>> float(mutual_information([[5, 0], [0, 5]]))  # the expert gives the class away: 1 bit
    1.0
    >>> float(mutual_information([[3, 3], [1, 1]]))  # independent
    0.0
    """
    joint = _counts(counts)
    joint = joint / joint.sum()
    outer = joint.sum(axis=1, keepdims=True) * joint.sum(axis=0, keepdims=True)  # p(c) p(e)
    nonzero = joint > 0
    value = float(np.sum(joint[nonzero] * np.log2(joint[nonzero] / outer[nonzero])))
    return max(value, 0.0)  # clip -1e-16 rounding


def specialisation_report(counts):
    """Summary numbers of a `[classes, experts]` count table, all entropies in bits.

    Returns:
        A dict with
        `mi` (`I(C; E)`),
        `h_expert` (`H(E)`, entropy of the expert load; `log2 E` = balanced),
        `h_expert_given_class` (`H(E | C)`, mean over classes weighted by
        their frequency: 0 = every class goes to a single expert),
        `h_class` (`H(C)`),
        `mi_max` (`min(H(C), log2 E)`, the most MI could be with these classes and E experts),
        `max_load` (`E * max_e p(e)`: 1 = balanced, E = everything on one expert),
        `purity` (fraction of examples whose expert's majority class is their own class).

    Example:
    >>> r = specialisation_report([[10, 0], [0, 10]])
    >>> r["mi"], r["h_expert"], r["h_expert_given_class"], r["max_load"], r["purity"]
    (1.0, 1.0, 0.0, 1.0, 1.0)
    """
    table = _counts(counts)
    joint = table / table.sum()
    p_class = joint.sum(axis=1)
    p_expert = joint.sum(axis=0)
    rows = p_class > 0
    h_given = float(np.sum(p_class[rows] * entropy_bits(joint[rows], axis=1)))
    num_experts = table.shape[1]
    return {
        "mi": mutual_information(table),
        "h_expert": float(entropy_bits(p_expert)),
        "h_expert_given_class": h_given,
        "h_class": float(entropy_bits(p_class)),
        "mi_max": float(min(entropy_bits(p_class), np.log2(num_experts))),
        "max_load": float(num_experts * p_expert.max()),
        "purity": float(joint.max(axis=0).sum()),
    }
