"""The paper's training recipe (§6) as small pieces: optimizer, weight transfer, train steps.

Recipe: train the classifier (C + 1 classes, background included) on classifier crops; copy its
trunk and embedding into the localizer ("reuse the weights of all layers but the classifier");
fine-tune the whole localizer, convolutions included, on the weighted mask loss. AdaGrad is the
paper's optimizer.

The train steps run under any tf.distribute strategy (the default one included): each replica
computes per-example losses, averages them over the *global* batch, and the Keras optimizer
all-reduces the gradients, so every replica applies the same update.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import tensorflow as tf

from dnet_tf.config import LossConfig, TrainConfig
from dnet_tf.models.losses import weighted_mask_error

# Sub-models shared by the classifier and the localizer, copied in this order.
SHARED_SUBMODELS = ("trunk", "embedding")


def make_optimizer(train_cfg: TrainConfig) -> keras.optimizers.Optimizer:
    """The optimizer named by ``train_cfg.optimizer``; create it inside the strategy's scope.

    Args:
      train_cfg: uses optimizer ("adagrad", "adam", "sgd") and learning_rate.
    Returns:
      A Keras optimizer. AdaGrad keeps Keras' defaults (initial accumulator 0.1).
    Raises:
      ValueError: unknown optimizer name.
    """
    lr = train_cfg.learning_rate
    if train_cfg.optimizer == "adagrad":
        return keras.optimizers.Adagrad(learning_rate=lr)
    if train_cfg.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate=lr)
    if train_cfg.optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate=lr, momentum=0.9)
    raise ValueError(
        f"config field 'optimizer': unknown optimizer {train_cfg.optimizer!r}; "
        "known: adagrad, adam, sgd"
    )


def init_localizer_from_classifier(localizer: keras.Model, classifier: keras.Model) -> list:
    """Copies the shared sub-models' weights (trunk, embedding) from the classifier.

    The localizer's "conv" head has no embedding; then only the trunk is copied.
    Args:
      localizer, classifier: models from build_localizer / build_classifier with the same
        ModelConfig (same backbone, width, input size).
    Returns:
      list of the copied sub-model names.
    Raises:
      ValueError: a shared sub-model is missing or has a different structure.
    """
    copied = []
    for name in SHARED_SUBMODELS:
        try:
            target = localizer.get_layer(name)
        except ValueError:
            continue
        try:
            source = classifier.get_layer(name)
        except ValueError as e:
            raise ValueError(
                f"classifier has no sub-model {name!r} to initialise the localizer's"
            ) from e
        src_w, dst_w = source.get_weights(), target.get_weights()
        shapes_src = [w.shape for w in src_w]
        shapes_dst = [w.shape for w in dst_w]
        if shapes_src != shapes_dst:
            raise ValueError(
                f"sub-model {name!r} differs between classifier and localizer "
                "(built from different ModelConfigs?)"
            )
        target.set_weights(src_w)
        copied.append(name)
    if "trunk" not in copied:
        raise ValueError("localizer has no 'trunk' sub-model; was it built by build_localizer?")
    return copied


def classifier_example_loss(labels, probs):
    """Cross-entropy per example. labels: int [B] in [0, C]; probs: float [B, C + 1] -> [B]."""
    return keras.losses.sparse_categorical_crossentropy(labels, probs)


def localizer_example_loss(loss_cfg: LossConfig) -> Callable:
    """The weighted mask loss per example: (masks [B, d, d, 5, C], predictions) -> [B]."""
    lam = float(loss_cfg.mask_lambda)

    def fn(masks, preds):
        return weighted_mask_error(masks, preds, lam)

    return fn


def make_train_step(
    strategy: tf.distribute.Strategy,
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    example_loss: Callable,
    global_batch_size: int,
) -> Callable:
    """A compiled step: next batch from a distributed iterator, forward, backward, update.

    Args:
      strategy: the strategy whose scope created model and optimizer.
      model: maps images [b, S, S, 3] to outputs; example_loss(targets, outputs) -> [b].
      global_batch_size: batch size summed over replicas (the losses are averaged over it).
    Returns:
      step(iterator) -> (mean loss over the global batch, float32 scalar;
                         number of correct top-1 predictions when outputs are class
                         probabilities [b, K] and targets int labels [b], else 0).
    """

    def replica_step(images, targets):
        with tf.GradientTape() as tape:
            outputs = model(images, training=True)
            per_example = example_loss(targets, outputs)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch_size)
        variables = model.trainable_variables
        grads = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(grads, variables))
        if outputs.shape.rank == 2 and targets.shape.rank == 1:
            predicted = tf.argmax(outputs, axis=-1, output_type=tf.int32)
            correct = tf.reduce_sum(tf.cast(predicted == tf.cast(targets, tf.int32), tf.float32))
        else:
            correct = tf.constant(0.0)
        return loss, correct

    @tf.function
    def step(iterator):
        images, targets = next(iterator)
        loss, correct = strategy.run(replica_step, args=(images, targets))
        sum_ = tf.distribute.ReduceOp.SUM
        return strategy.reduce(sum_, loss, axis=None), strategy.reduce(sum_, correct, axis=None)

    return step
