"""Early stopping, schedules and penalties against hand-computed values."""
import math

import numpy as np
import pytest
import torch

from dlexp.train.early_stopping import NoImprovement, NoStop, Patience
from dlexp.train.regularization import penalty
from dlexp.train.step import sgd_update
from dlexp.train.schedules import Schedule


def drive(stopper, losses, n_iters=1000):
    """The tutorial loop: validate when due, feed the next loss, stop when told."""
    seen = []
    losses = iter(losses)
    for it in range(n_iters):
        if stopper.due(it):
            seen.append(it)
            stopper.update(it, next(losses))
        if stopper.stop(it):
            return it, seen
    return None, seen


def test_patience_matches_hand_trace():
    # 10 batches/epoch, patience 8 -> validation_frequency = min(10, 8 // 2) = 4: validate at it 3, 7, 11, 15...
    p = Patience(n_train_batches=10, patience=8, patience_increase=2, improvement_threshold=0.995)
    assert p.frequency == 4
    stopped, seen = drive(p, [0.5, 0.4, 0.399, 0.1])
    # it 3: 0.5 beats inf -> patience = max(8, 3*2) = 8, best 0.5
    # it 7: 0.4 < 0.5 * 0.995 -> patience = max(8, 7*2) = 14, best 0.4
    # it 11: 0.399 < 0.4 but not < 0.398 -> best 0.399, patience stays 14
    # it 14: patience 14 <= 14 -> stop, before the validation at it 15 could see 0.1
    assert seen == [3, 7, 11]
    assert stopped == 14
    assert p.patience == 14 and p.best == 0.399 and p.best_iter == 11


def test_patience_frequency_is_epoch_when_patience_large():
    p = Patience(n_train_batches=83, patience=5000)
    assert p.frequency == 83


def test_no_improvement_stops_after_n_epochs_without_best():
    s = NoImprovement(n_train_batches=5, epochs=2)
    stopped, seen = drive(s, [0.5, 0.4, 0.45, 0.41, 0.42])
    # validations once an epoch at it 4, 9, 14, 19; best at it 9; stop when it - 9 >= 10
    assert seen == [4, 9, 14, 19] and stopped == 19 and s.best_iter == 9


def test_no_stop_never_stops():
    stopped, seen = drive(NoStop(n_train_batches=10), [1.0] * 100, n_iters=100)
    assert stopped is None and len(seen) == 10


def test_inverse_schedule():
    s = Schedule("inverse", lr=0.1, decay=0.5)
    assert [round(s.on_epoch_end(e), 10) for e in (1, 2, 3)] == [round(0.1 / (1 + 0.5 * e), 10) for e in (1, 2, 3)]


def test_plateau_schedule_halves_down_to_floor():
    s = Schedule("plateau", lr=1.0, plateau_patience=2, min_lr_factor=1 / 1024)
    lrs = [s.on_validation(improved=False) for _ in range(30)]
    assert lrs[:4] == [1.0, 0.5, 0.5, 0.25]
    assert min(lrs) == 1 / 1024 and lrs[-1] == 1 / 1024
    assert s.on_validation(improved=True) == 1 / 1024


def test_constant_schedule():
    s = Schedule("constant", lr=0.3)
    assert s.on_epoch_end(5) == 0.3 and s.on_validation(False) == 0.3


@pytest.mark.parametrize("l1,l2", [(0.0, 1e-2), (1e-3, 0.0), (1e-3, 1e-2)])
def test_penalty_and_gradient_match_numpy(l1, l2):
    rng = np.random.RandomState(0)
    ws = [rng.randn(7, 5), rng.randn(3, 7)]
    expected = sum(l1 * np.abs(w).sum() + l2 * (w ** 2).sum() for w in ws)
    tensors = [torch.tensor(w, requires_grad=True) for w in ws]
    assert math.isclose(penalty(tensors, l1, l2).item(), expected, rel_tol=1e-12)
    # the gradient the update rule adds to the NLL's (here zero, lr 1) equals autograd's gradient of the penalty
    stepped = [t.detach().clone() for t in tensors]
    sgd_update(stepped, [torch.zeros_like(t) for t in stepped], 1.0, n_weights=len(stepped), l1=l1, l2=l2)
    for t, s in zip(tensors, stepped):
        t.grad = t.detach() - s
    for t, w in zip(tensors, ws):
        assert np.allclose(t.grad.numpy(), l1 * np.sign(w) + 2 * l2 * w)
    auto = torch.autograd.grad(penalty(tensors, l1, l2), tensors)
    for t, g in zip(tensors, auto):
        assert torch.allclose(t.grad, g)
