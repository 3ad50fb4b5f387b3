"""Policies and gates/buffers of the Eventful core, on hand-made tensors."""
import math

import pytest
import torch

from eventful_perception.eventful.gate import TokenBuffer, TokenGate, TokenLayout
from eventful_perception.eventful.policy import BudgetFraction, Prioritized, Threshold, TopR, detection_priority
from eventful_perception.eventful.state import BufferState, GateState

pytestmark = pytest.mark.usefixtures("single_thread")


def test_top_r_picks_largest_errors():
    errors = torch.tensor([[0.1, 5.0, 0.3, 2.0], [9.0, 0.0, 1.0, 0.5]])
    picked = TopR(2)(errors)
    assert [sorted(row) for row in picked.tolist()] == [[1, 3], [0, 2]]
    assert TopR(10)(errors).shape == (2, 4)
    assert TopR(0)(errors).shape == (2, 0)


def test_budget_fraction_rounds_up():
    errors = torch.rand(1, 1376)
    for fraction in (0.3, 0.05, 1.0, 1e-6):
        picked = BudgetFraction(fraction)(errors)
        k = math.ceil(fraction * 1376)
        assert picked.shape[1] == k
        # the k largest errors, not any k tokens
        assert set(picked[0].tolist()) == set(errors.topk(k).indices[0].tolist())


def test_threshold_pads_batch_rows_with_their_best_index():
    errors = torch.tensor([[0.0, 3.0, 2.0, 0.1], [0.5, 0.0, 0.0, 0.0]])
    picked = Threshold(1.0)(errors)
    assert picked.shape == (2, 2)
    assert sorted(picked[0].tolist()) == [1, 2]
    assert picked[1].tolist() == [0, 0]  # padded by repeating its highest-error token
    assert Threshold(10.0)(errors).shape == (2, 0)


@pytest.mark.parametrize("bad", [lambda: TopR(-1), lambda: BudgetFraction(0.0), lambda: BudgetFraction(1.5),
                                 lambda: Threshold(-0.1)])
def test_policies_reject_bad_values(bad):
    with pytest.raises(ValueError):
        bad()


def test_gate_passes_everything_first_then_selects_and_forces_always_tokens():
    gate_state, buffer_state = GateState(), BufferState()
    layout = TokenLayout.build(6, [0, 5], torch.device("cpu"))
    gate, buffer = TokenGate(), TokenBuffer()
    x = torch.zeros(1, 6, 3)
    index, rows = gate(gate_state, x, TopR(1), layout)
    assert index is None and rows is x
    assert gate_state.reference is not x  # the gate keeps its own copy
    assert torch.equal(buffer.add(buffer_state, x, rows + 2, index), x + 2)

    x2 = x.clone()
    x2[0, 3] = 1.0  # only token 3 changes
    x2[0, 2] = 0.1
    index, rows = gate(gate_state, x2, TopR(1), layout)
    assert index.tolist() == [[0, 5, 3]]
    assert torch.equal(rows, x2[:, [0, 5, 3]])
    assert torch.equal(gate_state.reference[0, 3], x2[0, 3])  # reference updated ...
    assert torch.equal(gate_state.reference[0, 2], x[0, 2])  # ... only where selected
    full = buffer.add(buffer_state, x, torch.full((1, 3, 3), 7.0), index)
    assert full[0, [0, 3, 5]].eq(7.0).all() and full[0, [1, 2, 4]].eq(2.0).all()
    full.fill_(-1.0)  # the sum is a new tensor, not the buffer
    assert buffer_state.values[0, [0, 3, 5]].eq(7.0).all()


def test_gate_with_policy_selecting_all_returns_none():
    state = GateState()
    layout = TokenLayout.build(4, [0], torch.device("cpu"))
    gate = TokenGate()
    gate(state, torch.zeros(2, 4, 3), TopR(1), layout)
    index, rows = gate(state, torch.ones(2, 4, 3), BudgetFraction(1.0), layout)
    assert index is None
    assert torch.equal(state.reference, torch.ones(2, 4, 3))


def test_prioritized_policy_ranks_weighted_errors():
    errors = torch.tensor([[5.0, 4.0, 3.0, 1.0]])
    weights = torch.tensor([[1.0, 1.0, 2.0, 1.0]])  # token 2: 3 x 2 = 6 beats 5
    picks = Prioritized(TopR(2), weights)(errors)
    assert sorted(picks[0].tolist()) == [0, 2]
    assert sorted(TopR(2)(errors)[0].tolist()) == [0, 1]
    with pytest.raises(ValueError, match="priority weights"):
        Prioritized(TopR(2), weights[:, :3])(errors)


def test_detection_priority_spreads_each_score_one_patch_around():
    """A 4 x 5 grid with one token scoring 0.5 at (1, 1) and one 0.25 at (3, 4), strength 4."""
    scores = torch.zeros(1, 20)
    scores[0, 1 * 5 + 1], scores[0, 3 * 5 + 4] = 0.5, 0.25
    weights = detection_priority(scores, (4, 5), 4.0).reshape(4, 5)
    expected = torch.ones(4, 5)
    expected[2:4, 3:5] = 2.0  # 1 + 4 * 0.25 within one patch of (3, 4)
    expected[0:3, 0:3] = 3.0  # 1 + 4 * 0.5 within one patch of (1, 1)
    assert torch.equal(weights, expected)
