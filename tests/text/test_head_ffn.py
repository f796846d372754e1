"""Head and FFN-neuron pruning (Kwon et al.): masks, Fisher, search, rearrangement, tuning, removal."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from metaprune.errors import ModelError, PruneError
from metaprune.flops import count_flops
from metaprune.models.minilm import HEADS_KEY, INTERMEDIATE_KEY, mean_pool
from metaprune.prune import head_ffn
from metaprune.prune.head_ffn_tuning import remove_structure, tune_masks


def batch(rows: int = 3, length: int = 7, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    mask = torch.ones(rows, length, dtype=torch.long)
    mask[0, length - 2:] = 0
    return {"input_ids": torch.randint(1, 50, (rows, length), generator=generator), "attention_mask": mask}


def embed_with(model: nn.Module):
    return lambda tokens: mean_pool(model(**tokens).last_hidden_state, tokens["attention_mask"])


def test_a_model_without_attention_layers_is_a_model_error() -> None:
    with pytest.raises(ModelError, match="no BERT-style encoder layers with attention"):
        head_ffn.encoder_layers(nn.Sequential(nn.Linear(4, 4)))


def test_all_ones_masks_change_nothing_and_a_zero_mask_silences_its_unit(tiny_bert) -> None:
    layers = head_ffn.encoder_layers(tiny_bert)
    tokens = batch()
    with torch.no_grad():
        reference = tiny_bert(**tokens).last_hidden_state
        with head_ffn.applied_masks(layers, head_ffn.StructureMasks.ones(layers)):
            same = tiny_bert(**tokens).last_hidden_state
        masks = head_ffn.StructureMasks.ones(layers)
        masks.heads[1][2] = 0.0
        with head_ffn.applied_masks(layers, masks):
            changed = tiny_bert(**tokens).last_hidden_state
    assert torch.equal(same, reference)
    assert not torch.allclose(changed, reference)


def test_physical_removal_equals_the_masked_model_with_scales_folded_in(tiny_bert) -> None:
    layers = head_ffn.encoder_layers(tiny_bert)
    masks = head_ffn.StructureMasks.ones(layers)
    masks.heads[0][torch.tensor([0, 3])] = 0.0
    masks.heads[1][1] = 0.0
    masks.heads[1][2] = 1.7  # a tuned scale
    masks.neurons[0][:40] = 0.0
    masks.neurons[1][::3] = 0.0
    masks.neurons[1][1] = -0.4
    tokens = batch()
    with torch.no_grad(), head_ffn.applied_masks(layers, masks):
        expected = tiny_bert(**tokens).last_hidden_state
    structure = remove_structure(tiny_bert, masks)
    assert structure == {HEADS_KEY: [2, 3], INTERMEDIATE_KEY: [24, 42]}
    assert getattr(tiny_bert.config, HEADS_KEY) == [2, 3]
    assert tiny_bert.encoder.layer[0].attention.self.query.out_features == 16
    with torch.no_grad():
        assert torch.allclose(tiny_bert(**tokens).last_hidden_state, expected, atol=1e-5)


def test_removing_every_head_of_a_layer_is_refused(tiny_bert) -> None:
    layers = head_ffn.encoder_layers(tiny_bert)
    masks = head_ffn.StructureMasks.ones(layers)
    masks.heads[0][:] = 0.0
    with pytest.raises(PruneError, match="at least one head"):
        remove_structure(tiny_bert, masks)


def test_unit_costs_agree_with_the_flop_counter(tiny_bert) -> None:
    layers = head_ffn.encoder_layers(tiny_bert)
    tokens = {"input_ids": torch.ones(1, 16, dtype=torch.long), "attention_mask": torch.ones(1, 16, dtype=torch.long)}
    dense = count_flops(tiny_bert, tokens)
    costs = head_ffn.UnitCosts.of(layers, 16, dense)
    masks = head_ffn.StructureMasks.ones(layers)
    masks.heads[0][1:] = 0.0
    masks.neurons[1][10:] = 0.0
    remove_structure(tiny_bert, masks)
    assert count_flops(tiny_bert, tokens) == costs.flops(heads=1 + 4, neurons=64 + 10)


def test_per_example_mask_gradients_match_one_example_at_a_time(tiny_bert) -> None:
    layers = head_ffn.encoder_layers(tiny_bert)
    tokens = batch(rows=3)
    calibration = head_ffn.CalibrationBatch(tokens, batch(rows=3, seed=1), torch.tensor([0.2, 0.9, 0.5]))
    together = head_ffn.mask_gradients(tiny_bert, layers, [calibration], embed_with(tiny_bert), "sts")
    for row in range(3):
        single = head_ffn.CalibrationBatch({k: v[row:row + 1] for k, v in calibration.first.items()},
                                           {k: v[row:row + 1] for k, v in calibration.second.items()},
                                           calibration.scores[row:row + 1])
        alone = head_ffn.mask_gradients(tiny_bert, layers, [single], embed_with(tiny_bert), "sts")
        for kind in ("heads", "neurons"):
            for layer in range(2):
                assert torch.allclose(getattr(together, kind)[layer][row], getattr(alone, kind)[layer][0],
                                      atol=1e-6, rtol=1e-4)
    assert all(parameter.requires_grad for parameter in tiny_bert.parameters())  # flags restored


def test_the_embedding_fisher_needs_no_labels(tiny_bert) -> None:
    layers = head_ffn.encoder_layers(tiny_bert)
    gradients = head_ffn.mask_gradients(tiny_bert, layers, [head_ffn.CalibrationBatch(batch())],
                                        embed_with(tiny_bert), "embedding")
    heads, neurons = gradients.importance()
    assert heads[0].shape == (4,) and neurons[1].shape == (64,)
    assert all(float(scores.sum()) > 0 for scores in heads + neurons)


def test_search_keeps_the_most_important_units_within_the_budget() -> None:
    costs = head_ffn.UnitCosts(head=10, neuron=1, fixed=100)
    heads = [torch.tensor([5.0, 1.0]), torch.tensor([0.5, 0.2])]
    neurons = [torch.tensor([3.0, 0.1, 0.1, 0.1]), torch.tensor([2.0, 0.0, 0.0, 0.0])]
    masks = head_ffn.search_masks(heads, neurons, costs, max_flops=100 + 2 * 10 + 3)
    kept_heads, kept_neurons = masks.kept()
    assert kept_heads == [1, 1]  # one head per layer is the floor; a third would leave no neurons
    assert masks.heads[0].tolist() == [1.0, 0.0] and masks.heads[1].tolist() == [1.0, 0.0]
    assert sum(kept_neurons) == 3 and masks.neurons[0][0] == 1.0 and masks.neurons[1][0] == 1.0
    with pytest.raises(PruneError, match="cannot keep one head per layer"):
        head_ffn.search_masks(heads, neurons, costs, max_flops=110)


def test_uniform_baseline_keeps_the_same_fraction_everywhere() -> None:
    costs = head_ffn.UnitCosts(head=10, neuron=1, fixed=0)
    heads = [torch.arange(4.0), torch.arange(4.0)]
    neurons = [torch.arange(8.0), torch.arange(8.0)]
    masks = head_ffn.uniform_masks(heads, neurons, costs, max_flops=0.5 * (80 + 16))
    assert masks.kept() == ([2, 2], [4, 4])
    assert masks.heads[0].tolist() == [0.0, 0.0, 1.0, 1.0]


def test_rearrangement_removes_units_whose_gradients_cancel() -> None:
    # units 0 and 1 have large but opposite gradients: removing both costs nothing together,
    # while the diagonal alone would remove the small unit 2 and one of them
    gradients = torch.tensor([[3.0, -3.0, 0.5, 5.0], [2.0, -2.0, -0.5, 4.0]])
    mask = torch.tensor([1.0, 0.0, 0.0, 1.0])
    assert head_ffn.rearrange_layer(gradients, mask).tolist() == [0.0, 0.0, 1.0, 1.0]
    assert head_ffn.rearrange_layer(gradients, torch.ones(4)).tolist() == [1.0] * 4


def test_tuning_brings_the_pruned_output_closer_to_the_dense_one(tiny_bert) -> None:
    dense = copy.deepcopy(tiny_bert)
    layers = head_ffn.encoder_layers(tiny_bert)
    masks = head_ffn.StructureMasks.ones(layers)
    masks.heads[0][0] = masks.heads[1][3] = 0.0
    masks.neurons[0][:32] = masks.neurons[1][32:] = 0.0
    calibration = [batch(rows=8, length=10, seed=seed) for seed in range(3)]
    tuned = tune_masks(tiny_bert, dense, masks, calibration)
    assert all(torch.equal(t == 0, m == 0) for t, m in zip(tuned.heads + tuned.neurons, masks.heads + masks.neurons))

    def error(current: head_ffn.StructureMasks) -> float:
        with torch.no_grad(), head_ffn.applied_masks(layers, current):
            return sum(float((tiny_bert(**b).last_hidden_state - dense(**b).last_hidden_state).pow(2).mean())
                       for b in calibration)

    assert error(tuned) < 0.9 * error(masks)
