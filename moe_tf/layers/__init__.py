"""Keras layers: experts, router, and the Mixture-of-Experts layer."""

from moe_tf.layers.experts import Experts
from moe_tf.layers.linear_moe import LinearExpertsMoE
from moe_tf.layers.moe import MixtureOfExperts
from moe_tf.layers.router import TopKRouter

__all__ = ["Experts", "LinearExpertsMoE", "MixtureOfExperts", "TopKRouter"]
