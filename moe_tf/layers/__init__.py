"""Keras layers: experts, routers, and the Mixture-of-Experts layers."""

from moe_tf.layers._cost import LayerCost
from moe_tf.layers.base import MoELayer
from moe_tf.layers.dropout import Dropout
from moe_tf.layers.expert_choice import ExpertChoiceMoE, ExpertChoiceRouter, expert_choice_capacity
from moe_tf.layers.experts import Experts
from moe_tf.layers.linear_moe import LinearExpertsMoE
from moe_tf.layers.moe import MixtureOfExperts
from moe_tf.layers.router import Router, TopKRouter
from moe_tf.layers.shared_experts import SharedExpertsMoE, deepseek_moe_config
from moe_tf.layers.soft_moe import SoftMoE, SoftRouter

__all__ = [
    "Dropout",
    "ExpertChoiceMoE",
    "ExpertChoiceRouter",
    "Experts",
    "LayerCost",
    "LinearExpertsMoE",
    "MixtureOfExperts",
    "MoELayer",
    "Router",
    "SharedExpertsMoE",
    "SoftMoE",
    "SoftRouter",
    "TopKRouter",
    "deepseek_moe_config",
    "expert_choice_capacity",
]
