"""moe_tf: Mixture of Experts with Keras 3 / TensorFlow, from dense mixtures to sparse top-k.

Importing `moe_tf` registers its layers with Keras, so models that use them
load from `.keras` files.
"""

from moe_tf import callbacks, dispatch, losses, metrics, routing
from moe_tf.callbacks import RoutingStats, StepTimer
from moe_tf.layers import ExpertChoiceMoE, Experts, MixtureOfExperts, SharedExpertsMoE, SoftMoE, TopKRouter

__version__ = "0.1.0"

__all__ = [
    "ExpertChoiceMoE",
    "Experts",
    "MixtureOfExperts",
    "RoutingStats",
    "SharedExpertsMoE",
    "SoftMoE",
    "StepTimer",
    "TopKRouter",
    "callbacks",
    "dispatch",
    "losses",
    "metrics",
    "routing",
]
