"""What nano's training and `vfl lora` share: which samples each optimizer step holds, the loss on answer
tokens, the learning-rate schedule, and checkpoint files written whole.

Both draw a step's samples from epoch-wise seeded shuffles, so a resumed run sees the same samples in the same
steps as one that was never stopped, and a step may straddle two epochs.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Callable

from vfl.runner import replace_file


def epoch_order(seed: int, epoch: int, n: int) -> list[int]:
    """The order of ``n`` samples in ``epoch``: a shuffle seeded by (seed, epoch) alone."""
    order = list(range(n))
    random.Random(seed * 1000 + epoch).shuffle(order)
    return order


def step_samples(step: int, batch_size: int, n: int, seed: int) -> list[int]:
    """The samples of optimizer step ``step``: slots step*B .. step*B + B - 1 of the epochs laid end to end."""
    slots = range(step * batch_size, (step + 1) * batch_size)
    orders = {epoch: epoch_order(seed, epoch, n) for epoch in {slot // n for slot in slots}}
    return [orders[slot // n][slot % n] for slot in slots]


def answer_cross_entropy(labels, logits_at: Callable) -> tuple:
    """Next-token cross-entropy on the answer tokens alone (``labels`` != -100): each such token's, and each
    row's mean of them. ``logits_at(chosen)`` gives the logits where the mask ``chosen`` (over the sequence
    shifted by one) is set, so a caller may project only those positions or index logits it already has;
    half-precision logits are scored in float32."""
    import torch

    targets = labels[:, 1:]
    chosen = targets != -100
    logits = logits_at(chosen)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    per_token = torch.nn.functional.cross_entropy(logits, targets[chosen], reduction="none")
    per_row = torch.zeros(labels.shape[0], dtype=per_token.dtype, device=per_token.device)
    per_row = per_row.index_add_(0, chosen.nonzero()[:, 0], per_token) / chosen.sum(1).clamp(min=1)
    return per_token, per_row


def warmup_cosine(warmup: float, steps: int) -> Callable[[int], float]:
    """The rate's factor at each step (for `torch.optim.lr_scheduler.LambdaLR`): a linear rise over the first
    ``warmup`` share of the steps (at least one; the first step already moves), then a cosine fall to zero."""
    rising = max(1, int(warmup * steps))

    def factor(step: int) -> float:
        if step < rising:
            return (step + 1) / rising
        return 0.5 * (1 + math.cos(math.pi * (step - rising) / max(1, steps - rising)))

    return factor


def torch_save_atomically(obj, path: Path) -> None:
    """``torch.save`` into a side file renamed over ``path`` (`vfl.runner.replace_file`)."""
    import torch

    replace_file(path, lambda tmp: torch.save(obj, tmp))
