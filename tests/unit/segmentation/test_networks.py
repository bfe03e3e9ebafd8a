"""Registered 3D networks: layer groups cover every parameter once (and work with the transfer strategies),
state dicts match MONAI's BasicUNet, and head transfer copies output channels by class name."""

from __future__ import annotations

import pytest
import torch

from medtransfer.config import TrainConfig, TransferConfig
from medtransfer.errors import ConfigError, UnknownNameError
from medtransfer.segmentation.networks import SEG_NETWORKS, build_seg_network, transfer_head
from medtransfer.transfer.strategies import build_strategy, layer_groups, reset_head, set_trainable


@pytest.mark.parametrize("name", SEG_NETWORKS.names())
def test_layer_groups_cover_every_parameter_once(name: str) -> None:
    model = build_seg_network(name, in_channels=2, n_classes=3)
    groups = layer_groups(model)  # raises on a parameter in two groups or in none
    assert len(groups) == 10 and model.encoder_groups == 5
    assert {id(p) for p in groups[-1]} == {id(p) for p in model.head.parameters()}
    assert model.head.out_channels == 3 and model.head.kernel_size == (1, 1, 1)
    assert sum(p.numel() for g in groups for p in g) == sum(p.numel() for p in model.parameters())
    assert model(torch.zeros(1, 2, 32, 16, 16)).shape == (1, 3, 32, 16, 16)


def test_state_dict_matches_monai_basic_unet() -> None:
    from monai.networks.nets import BasicUNet

    model = build_seg_network("basic_unet", 1, 3)
    reference = BasicUNet(spatial_dims=3, in_channels=1, out_channels=3, features=(16, 16, 32, 64, 128, 16))
    assert list(model.state_dict()) == list(reference.state_dict())
    reference.load_state_dict(model.state_dict())
    x = torch.randn(1, 1, 32, 16, 16)
    torch.testing.assert_close(model.eval()(x), reference.eval()(x))


def test_strategies_freeze_the_encoder_or_all_but_the_head() -> None:
    model = build_seg_network("tiny_unet", 1, 3)
    groups = layer_groups(model)
    encoder = {id(p) for g in groups[: model.encoder_groups] for p in g}
    set_trainable(groups, len(groups) - model.encoder_groups)
    assert all(p.requires_grad == (id(p) not in encoder) for p in model.parameters())
    set_trainable(groups, len(groups))
    decoder_only = build_strategy(TransferConfig(strategy="decoder_finetune", train_bn=False), TrainConfig())
    decoder_only.on_train_start(model)
    assert all(p.requires_grad == (id(p) not in encoder) for p in model.parameters())
    probe = build_strategy(TransferConfig(strategy="linear_probe"), TrainConfig())
    probe.on_train_start(model)
    head = {id(p) for p in model.head.parameters()}
    assert all(p.requires_grad == (id(p) in head) for p in model.parameters())
    before = model.head.weight.detach().clone()
    reset_head(model)
    assert not torch.equal(before, model.head.weight)


def test_head_transfer_by_class_name() -> None:
    torch.manual_seed(0)
    source = build_seg_network("tiny_unet", 1, 3)
    state = source.state_dict()
    target = build_seg_network("tiny_unet", 1, 4)
    with torch.no_grad():
        target.head.weight.fill_(7.0)
    mapped = transfer_head(
        state, ["background", "Anterior", "Posterior"], target, ["Background", "liver", "posterior", "x"]
    )
    assert mapped == {"Background": "background", "posterior": "Posterior"}
    w, b = target.head.weight, target.head.bias
    torch.testing.assert_close(w[0], state["final_conv.weight"][0])
    torch.testing.assert_close(w[2], state["final_conv.weight"][2])
    torch.testing.assert_close(b[[0, 2]], state["final_conv.bias"][[0, 2]])
    assert not (w[[1, 3]] == 7.0).any()  # re-initialised, not left as they were
    assert not any(torch.equal(w[1], state["final_conv.weight"][s]) for s in range(3))


def test_head_transfer_checks_shapes() -> None:
    state = build_seg_network("tiny_unet", 1, 3).state_dict()
    wider = build_seg_network("tiny_unet", 1, 2, features=(4, 4, 8, 8, 16, 8))
    with pytest.raises(ValueError, match="does not fit"):
        transfer_head(state, ["background", "a", "b"], wider, ["background", "a"])
    with pytest.raises(ValueError, match="3 channels for 2 classes"):
        transfer_head(state, ["background", "a"], build_seg_network("tiny_unet", 1, 2), ["background", "a"])


def test_unknown_names_and_options() -> None:
    with pytest.raises(UnknownNameError, match="did you mean \\['basic_unet'"):
        build_seg_network("basic_unett", 1, 2)
    with pytest.raises(ConfigError, match="unknown option \\['featurs'\\]"):
        build_seg_network("tiny_unet", 1, 2, featurs=(1, 2))
    with pytest.raises(ConfigError, match="six features"):
        build_seg_network("tiny_unet", 1, 2, features=(4, 8))
    assert build_seg_network("tiny_unet", 1, 2, dropout=0.1).features == (4, 4, 8, 8, 16, 4)
