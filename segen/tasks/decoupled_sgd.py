"""Nesterov SGD with airbench's decoupled hyperparameters (`model.optimizer` of cnn_cifar10).

airbench94 (Jordan 2024) states lr, weight decay and momentum so that each can be tuned alone
(after Page's "How to train your ResNet"): `lr` is the step size per 1,024 examples and is
divided by 1 + 1/(1 - momentum), the factor by which Nesterov momentum lengthens steps under a
constant gradient; `weight_decay` is the shrinkage per 1,024 examples, whatever the lr. The
BatchNorm parameters (their biases: the scales are frozen there) step `bias_scaler` times
faster, with the same decay. airbench sums its loss over the batch; segen's tasks average it,
so the gradient-side lr is multiplied by the batch size here to give the same updates.
"""

from __future__ import annotations

import torch
from torch import nn


def decoupled_sgd(module: nn.Module, lr: float, weight_decay: float, momentum: float, batch_size: int,
                  bias_scaler: float = 1.0, nesterov: bool = True) -> torch.optim.SGD:
    """`torch.optim.SGD` over `module`'s trainable parameters in two groups: BatchNorm parameters
    (lr x bias_scaler) and the rest; both decay by `weight_decay * batch_size / 1024` per step."""
    kilostep = 1024 * (1 + 1 / (1 - momentum))
    step_lr = lr * batch_size / kilostep  # for a loss averaged over the batch
    decay = weight_decay * batch_size / kilostep  # torch applies lr x weight_decay per step
    norms = {id(p) for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) for p in m.parameters()}
    trainable = [p for p in module.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in trainable if id(p) in norms], "lr": step_lr * bias_scaler},
        {"params": [p for p in trainable if id(p) not in norms], "lr": step_lr},
    ]
    groups = [g for g in groups if g["params"]]
    for g in groups:
        g["weight_decay"] = decay / g["lr"]
    return torch.optim.SGD(groups, lr=step_lr, momentum=momentum, nesterov=nesterov)
