"""Model zoo: ``build_model`` maps a model config to an ``nn.Module``.

Every supervised model returns logits from ``forward(x)`` (x flattened,
(N, C*H*W)), lists its penalised weights in ``weights()`` and its first-layer
filters, one per row in input space, in ``filters()``. Models trained without
labels, alone (da, ca, rbm) or before fine-tuning (sda, dbn), also list the
layers to pretrain, bottom first, in ``pretrain_layers()`` and say whether a
supervised phase follows in ``supervised``.
"""
from .lenet import LeNet, feature_sizes
from .logreg import LogisticRegression
from .mlp import MLP


def build_model(cfg, image_shape, n_classes):
    n_in = image_shape[0] * image_shape[1] * image_shape[2]
    if cfg.name == "logreg":
        return LogisticRegression(n_in, n_classes)
    if cfg.name == "mlp":
        return MLP(n_in, n_classes, tuple(cfg.hidden_sizes), cfg.activation)
    if cfg.name == "lenet":
        return LeNet(image_shape, n_classes, tuple(cfg.nkerns), cfg.filter_size, cfg.pool_size, cfg.hidden_size)
    if cfg.name == "da":
        from .da import DenoisingAutoencoder

        return DenoisingAutoencoder(n_in, cfg.n_hidden, cfg.corruption_level)
    if cfg.name == "ca":
        from .ca import ContractiveAutoencoder

        return ContractiveAutoencoder(n_in, cfg.n_hidden, cfg.contraction_level)
    if cfg.name == "rbm":
        from .rbm import RBM

        return RBM(n_in, cfg.n_hidden, cfg.k, cfg.persistent, cfg.pretrain_batch_size)
    if cfg.name == "sda":
        from .sda import StackedDenoisingAutoencoder

        return StackedDenoisingAutoencoder(n_in, n_classes, tuple(cfg.hidden_layers_sizes),
                                           tuple(cfg.corruption_levels))
    if cfg.name == "dbn":
        from .dbn import DeepBeliefNetwork

        return DeepBeliefNetwork(n_in, n_classes, tuple(cfg.hidden_layers_sizes), cfg.k, cfg.pretrain_batch_size)
    raise ValueError(f"model.name={cfg.name!r} is not allowed: one of logreg, mlp, lenet, da, ca, rbm, sda, dbn")


def check_model(cfg, image_shape):
    """Raise ValueError before any work if the model cannot take this input shape."""
    if cfg.name == "lenet":
        feature_sizes(image_shape, cfg.nkerns, cfg.filter_size, cfg.pool_size)


__all__ = ["build_model", "check_model", "LogisticRegression", "MLP", "LeNet"]
