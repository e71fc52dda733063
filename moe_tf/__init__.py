"""moe_tf: Mixture of Experts with Keras 3 / TensorFlow, from dense mixtures to sparse top-k.

`import moe_tf` is light and changes nothing in your process: TensorFlow and
Keras load on the first use of a layer or of a submodule that needs them
(`from moe_tf import MixtureOfExperts`, `moe_tf.routing`, `import
moe_tf.layers`). That first use registers the layers with Keras, so models
that use them load from `.keras` files; in a fresh process, import a layer
(or `moe_tf.layers`) before `keras.models.load_model`.

The command-line tools (`python -m moe_tf`, `python -m moe_tf.data`,
`moe-grade`) silence TensorFlow's start-up log lines in their `main()`,
before anything imports TensorFlow.

The library is every module but `moe_tf.course`, the course's machinery: the
grader (`moe-grade`), the training comparison behind `python -m moe_tf
train`, its model zoo, the notebooks' helpers, the toy problem, the plots and
the benchmark's timing. Building a MoE model never imports it (nor pytest,
matplotlib or tensorflow_datasets).
"""

import importlib
import importlib.util

__version__ = "0.1.0"

# name -> module that defines it, imported on first access (PEP 562)
_EXPORTS = {
    "ExpertChoiceMoE": "moe_tf.layers",
    "Experts": "moe_tf.layers",
    "MixtureOfExperts": "moe_tf.layers",
    "SharedExpertsMoE": "moe_tf.layers",
    "SoftMoE": "moe_tf.layers",
    "TopKRouter": "moe_tf.layers",
    "RoutingStats": "moe_tf.callbacks",
    "StepTimer": "moe_tf.callbacks",
}
_SUBMODULES = ("callbacks", "dispatch", "losses", "metrics", "routing")

__all__ = sorted([*_EXPORTS, *_SUBMODULES])


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif not name.startswith("__") and importlib.util.find_spec(f"moe_tf.{name}"):
        value = importlib.import_module(f"moe_tf.{name}")  # moe_tf.layers, moe_tf.course, ... on first access
    else:
        raise AttributeError(f"module 'moe_tf' has no attribute {name!r}")
    globals()[name] = value  # later accesses skip this function
    return value


def __dir__():
    return sorted({*globals(), *__all__})


def quiet_tensorflow():
    """Silences TensorFlow's C++ start-up lines (CPU features, oneDNN) unless you set `TF_CPP_MIN_LOG_LEVEL`.

    For command-line tools: call it in `main()` before TensorFlow is imported.
    """
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
