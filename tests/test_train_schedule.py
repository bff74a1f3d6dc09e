"""The training schedule: cosine decay, with an optional linear warm-up from lr/10."""

from itertools import pairwise

import torch
from edgeprune.train import TrainConfig, _schedule


def _lrs(config: TrainConfig, n_batches: int) -> list[float]:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=config.lr)
    sched = _schedule(opt, config, n_batches)
    out = []
    for _ in range(config.epochs * n_batches):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_no_warmup_is_plain_cosine():
    lrs = _lrs(TrainConfig(epochs=2, lr=0.1), 10)
    assert lrs[0] == 0.1
    assert all(a >= b for a, b in pairwise(lrs))


def test_warmup_rises_linearly_from_a_tenth_then_decays():
    lrs = _lrs(TrainConfig(epochs=4, lr=0.1, warmup_epochs=1), 10)
    assert abs(lrs[0] - 0.01) < 1e-12
    assert all(a < b for a, b in pairwise(lrs[:11]))  # rising over the first epoch
    assert abs(max(lrs) - 0.1) < 1e-12 and lrs.index(max(lrs)) == 10
    assert all(a >= b for a, b in pairwise(lrs[10:]))  # cosine after it
    assert lrs[-1] < 0.01
