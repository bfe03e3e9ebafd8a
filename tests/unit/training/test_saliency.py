"""Saliency maps: the target layer is found from the model (no list of backbone names), maps are non-constant,
the model explained is not changed, and the choice of images follows the documented rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from medtransfer.errors import UnknownNameError, UserError
from medtransfer.models.backbones import build_model
from medtransfer.tasks.base import task_kind
from medtransfer.training.explain import choose_images
from medtransfer.training.saliency import Explainer, _trace, check_method

pytestmark = pytest.mark.usefixtures("_one_thread")  # tests/conftest.py


@pytest.mark.parametrize(("backbone", "layer"), [("tiny", "backbone.stages"), ("resnet18", "backbone.layer3"),
                                                 ("densenet121", "backbone.features.denseblock3")])  # fmt: skip
def test_the_target_layer_is_a_spatial_map_and_the_map_is_not_constant(backbone, layer):
    torch.manual_seed(0)
    model = build_model(backbone, num_outputs=1).eval()
    with torch.no_grad():  # a head that sums the (non-negative) features: the positive class has evidence
        model.head[1].weight.fill_(1.0 / model.head[1].in_features)
        model.head[1].bias.zero_()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    inplace = [m for m in model.modules() if getattr(m, "inplace", False)]
    x = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    explainer = Explainer(model, x)
    assert explainer.layer == layer
    shape = dict(_trace(explainer.model, x))[explainer.layer]
    assert len(shape) == 4 and min(shape[2:]) > 1
    (heat,) = explainer.saliency(x, [0], "gradcam")
    assert heat.shape == (32, 32) and heat.std() > 0 and heat.max() == pytest.approx(1.0) and heat.min() >= 0
    # the model itself is untouched: same weights, its in-place activations still in place
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(m.inplace for m in inplace)


def test_gradcampp_and_occlusion_on_the_tiny_backbone():
    torch.manual_seed(0)
    model = build_model("tiny", num_outputs=3).eval()
    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(2))
    explainer = Explainer(model, x[:1], activate=lambda z: z.softmax(1))
    for method in ("gradcampp", "occlusion"):
        maps = explainer.saliency(x, [2, 0], method)
        assert all(m.shape == (32, 32) and 0 <= m.min() and m.max() <= 1 for m in maps)
        assert any(m.std() > 0 for m in maps)


class _Tokens(nn.Module):
    """A transformer-like backbone: a patch embedding (4-D) then token sequences (3-D)."""

    num_features = 8

    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(1, 8, 4, stride=4)
        self.mix = nn.Linear(8, 8)

    def forward(self, x):
        tokens = self.mix(self.patch(x).flatten(2).transpose(1, 2))
        return tokens.mean(1)


def test_a_token_model_has_no_grad_cam_layer_and_says_to_use_occlusion():
    from medtransfer.models.backbones import Classifier

    model = Classifier(_Tokens(), 1, "tokens", 1, group_cuts=("mix",)).eval()
    x = torch.rand(1, 1, 16, 16)
    explainer = Explainer(model, x)
    assert explainer.layer is None
    with pytest.raises(UserError, match="--method occlusion"):
        explainer.saliency(x, [0], "gradcam")
    assert explainer.saliency(x, [0], "occlusion")[0].shape == (16, 16)
    with pytest.raises(UserError, match="did you mean 'backbone.patch'"):
        Explainer(model, x, layer="backbone.pacth")


def test_an_unknown_method_has_a_did_you_mean():
    with pytest.raises(UnknownNameError, match=r"did you mean \['gradcam'"):
        check_method("gradcma")


# ------------------------------------------------------------------------------------------- choosing images
def test_binary_confident_correct_then_confident_wrong_with_the_runs_threshold():
    labels = np.array([[1], [0], [1], [0], [1], [0], [np.nan]], float)
    scores = np.array([[0.95], [0.05], [0.30], [0.90], [0.60], [0.35], [0.99]])
    # threshold 0.4: 0.30 is a negative call on a positive (wrong, confidence 0.70); 0.35 a correct negative
    chosen = choose_images(task_kind("binary"), labels, scores, 4, thresholds={"x": 0.4}, names=["x"])
    assert chosen["pos"].tolist() == [0, 1, 3, 2]
    assert chosen["group"].tolist() == ["confidently correct"] * 2 + ["confidently wrong"] * 2
    assert chosen["outcome"].tolist() == ["correct", "correct", "wrong", "wrong"]
    assert chosen["rank"].tolist() == [2, 7, 3, 6]  # 1 = the highest score of the 7 (the unlabelled 0.99)
    # more than the labelled images: the rest by highest score
    assert choose_images(task_kind("binary"), labels, scores, 7)["group"].tolist()[-1] in {"highest score"}


def test_multiclass_explains_the_predicted_class_and_multilabel_the_top_label():
    labels = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], float)
    scores = np.array([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8]])
    chosen = choose_images(task_kind("multiclass"), labels, scores, 3)
    assert chosen.set_index("pos")["target"].to_dict() == {0: 0, 1: 0, 2: 2}
    assert chosen.set_index("pos")["outcome"].to_dict() == {0: "correct", 1: "wrong", 2: "correct"}
    multi = choose_images(task_kind("multilabel"), labels, np.array([[0.2, 0.9, 0.1]] * 3), 3)
    assert set(multi["target"]) == {1}


def test_regression_smallest_and_largest_errors_and_the_seed_breaks_ties():
    labels = np.array([[10.0], [20.0], [30.0], [40.0]])
    scores = np.array([[10.5], [28.0], [30.0], [41.0]])
    chosen = choose_images(task_kind("regression"), labels, scores, 2)
    assert chosen["pos"].tolist() == [2, 1] and chosen["group"].tolist() == ["smallest error", "largest error"]
    ties = np.full((50, 1), 0.9), np.ones((50, 1))
    a = choose_images(task_kind("binary"), *ties[::-1], 5, seed=1)["pos"].tolist()
    assert a == choose_images(task_kind("binary"), *ties[::-1], 5, seed=1)["pos"].tolist()
    assert a != choose_images(task_kind("binary"), *ties[::-1], 5, seed=2)["pos"].tolist()
    drawn = choose_images(task_kind("binary"), *ties[::-1], 5, seed=3, select="random")
    assert set(drawn["group"]) == {"random"} and drawn["pos"].is_monotonic_increasing
