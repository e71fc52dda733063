"""moe_tf: Mixture of Experts with Keras 3 / TensorFlow, from dense mixtures to sparse top-k.

Importing `moe_tf` registers its layers with Keras, so models that use them
load from `.keras` files.
"""

import os

# TensorFlow's C++ start-up lines (the CPU feature guard, oneDNN, absl) would otherwise be the first
# thing every course command prints: `python -m moe_tf`, `python -m moe_tf.data` and `moe-grade` all
# import this package, and so TensorFlow, before their own code runs. A value you set wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

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
