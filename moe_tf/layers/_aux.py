"""The bookkeeping every routed MoE layer does after routing: auxiliary losses and routing metrics."""

from keras import ops

from moe_tf import losses
from moe_tf.metrics import routing_entropy


def add_losses_and_metrics(layer, route, balance, routed, dropped, token_mask=None):
    """Adds `layer`'s balance and z-losses (`add_loss`) and updates its `routing_metrics`.

    Args:
        layer: a layer with `balance_loss`, `balance_loss_weight`, `z_loss_weight`
            and a `RoutingMetrics` in `routing_metrics`.
        route: the router's output dict (`logits`, `probs`, ...), `[T, E]` tensors.
        balance: the balance-loss value (float32 scalar), added with weight
            `balance_loss_weight` unless `balance_loss` is None.
        routed: `[E]` assignments routed to each expert, before capacity.
        dropped: assignments over capacity (scalar).
        token_mask: optional `[T]`, 1 for real tokens, 0 for padding.
    """
    z_loss = losses.router_z_loss(route["logits"], mask=token_mask)
    if layer.balance_loss is not None and layer.balance_loss_weight > 0:
        layer.add_loss(layer.balance_loss_weight * balance)
    if layer.z_loss_weight > 0:
        layer.add_loss(layer.z_loss_weight * z_loss)
    num_real = ops.cast(ops.shape(route["logits"])[0], "float32") if token_mask is None else ops.sum(token_mask)
    layer.routing_metrics.update_state(
        counts=routed,
        tokens=num_real,
        dropped=dropped,
        entropy_sum=routing_entropy(route["probs"], token_mask) * num_real,
        balance_loss=balance,
        z_loss=z_loss,
    )
