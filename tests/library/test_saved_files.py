"""`.keras` files saved by an earlier moe_tf keep loading, with the same predictions.

`tests/fixtures/saved_v0_1/` holds one tiny trained model per MoE layer (and a
Transformer block with a Switch FFN), saved by moe_tf 0.1 before the layers
were rebuilt on one routing pipeline (issue 14), with the predictions that
version made (`tests/fixtures/make_saved_v0_1.py` wrote them).
"""

from pathlib import Path

import keras
import numpy as np
import pytest

import moe_tf.layers  # noqa: F401  registers the layers with Keras
import moe_tf.transformer  # noqa: F401

SAVED = Path(__file__).parents[1] / "fixtures" / "saved_v0_1"
NAMES = sorted(p.stem for p in SAVED.glob("*.keras"))


def test_every_layer_has_a_saved_file():
    assert set(NAMES) == {
        "dense_moe",
        "top2_capacity",
        "switch_einsum",
        "top2_dropless_bias",
        "expert_choice",
        "soft_moe",
        "shared_experts",
        "transformer_switch",
        "linear_experts",
    }


# SharedExpertsMoE became a MixtureOfExperts with shared experts in 0.2: its router and routed experts moved
# from `routed/` into the layer itself, so a 0.1 file's weights are not where 0.2 looks (README, "Saved models").
MOVED = {"shared_experts"}


def test_a_moved_layer_fails_to_load_rather_than_loading_wrong_weights():
    with pytest.raises(ValueError, match="could not be loaded"):
        keras.models.load_model(SAVED / "shared_experts.keras")


@pytest.mark.parametrize("name", sorted(set(NAMES) - MOVED))
def test_saved_model_loads_and_predicts_as_before(name):
    model = keras.models.load_model(SAVED / f"{name}.keras")
    x = np.load(SAVED / "inputs.npy")
    if name == "linear_experts":
        x = x[:, 0]
    expected = np.load(SAVED / f"{name}.npy")
    np.testing.assert_allclose(
        model.predict(x, verbose=0),
        expected,
        rtol=1e-5,
        atol=1e-6,
        err_msg=f"{name}.keras (saved by moe_tf 0.1) predicts differently now",
    )
