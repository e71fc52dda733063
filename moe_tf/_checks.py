"""Argument checks shared by the library: one clear `ValueError` per mistake.

Every message names the argument, the value received and what is allowed.
"""

import math
import numbers


def is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def positive_int(name, value, allow_none=False):
    """Returns `value` as an int, or raises naming `name`."""
    if value is None and allow_none:
        return None
    if not is_int(value) or value < 1:
        allowed = "a positive integer" + (" or None" if allow_none else "")
        raise ValueError(f"`{name}` must be {allowed}; received {name}={value!r}.")
    return int(value)


def number(name, value, minimum=0.0, strict=False, allow_none=False, none_means=""):
    """Returns `value` as a float >= minimum (> minimum if strict), or raises."""
    if value is None and allow_none:
        return None
    if not is_number(value) or value < minimum or (strict and value == minimum):
        allowed = f"a finite number {'>' if strict else '>='} {minimum:g}"
        if allow_none:
            allowed += f", or None{none_means}"
        raise ValueError(f"`{name}` must be {allowed}; received {name}={value!r}.")
    return float(value)


def top_k(k, num_experts=None):
    """Returns `k` as an int with 1 <= k <= num_experts, or raises."""
    if not is_int(k):
        raise ValueError(
            f"`k` must be an integer between 1 and the number of experts (or None for the dense mixture); "
            f"received k={k!r} of type {type(k).__name__}."
        )
    if k < 1 or (num_experts is not None and k > num_experts):
        upper = "num_experts" if num_experts is None else f"num_experts={num_experts}"
        raise ValueError(f"`k` must satisfy 1 <= k <= {upper}; received k={k}.")
    return int(k)


def one_of(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"`{name}` must be one of {tuple(allowed)}; received {name}={value!r}.")
    return value


def token_input_dim(layer, input_shape):
    """The feature size of a MoE layer's input `[batch, dim]` or `[batch, seq, dim]`, or raises naming `layer`."""
    shape = tuple(input_shape)
    if len(shape) not in (2, 3):
        raise ValueError(
            f"`{layer}` expects inputs of rank 2 [batch, dim] or 3 [batch, seq, dim]; "
            f"received input of shape {shape} (rank {len(shape)})."
        )
    if shape[-1] is None:
        raise ValueError(f"The last axis of the input (dim) must be known; received input of shape {shape}.")
    return shape[-1]
