"""Registry: register/get, duplicates, close-match errors."""

from __future__ import annotations

import pytest

from medtransfer.errors import UnknownNameError, UserError
from medtransfer.registry import Registry, suggest


@pytest.fixture
def strategies() -> Registry:
    reg: Registry = Registry("strategy")
    reg.register("finetune", "FT")
    reg.register("gradual_unfreeze", "GU")
    reg.register("linear_probe", "LP")
    return reg


def test_register_and_get(strategies):
    assert strategies.get("finetune") == "FT"
    assert "linear_probe" in strategies
    assert "nope" not in strategies
    assert len(strategies) == 3
    assert list(strategies) == strategies.names() == ["finetune", "gradual_unfreeze", "linear_probe"]


def test_register_as_decorator_returns_the_object():
    reg: Registry = Registry("backbone")

    @reg.register("tiny")
    class Tiny:
        pass

    assert reg.get("tiny") is Tiny
    assert Tiny.__name__ == "Tiny"  # the decorator hands the class back unchanged


def test_duplicate_name_raises(strategies):
    with pytest.raises(ValueError, match="strategy 'finetune' is already registered"):
        strategies.register("finetune", "other")
    assert strategies.get("finetune") == "FT"  # the first registration is kept


def test_unknown_name_lists_close_matches_and_available(strategies):
    with pytest.raises(UnknownNameError) as info:
        strategies.get("gradual_unfreez")
    msg = str(info.value)
    assert msg.startswith("unknown strategy 'gradual_unfreez';")
    assert "did you mean ['gradual_unfreeze']?" in msg
    assert "available: ['finetune', 'gradual_unfreeze', 'linear_probe']" in msg


def test_unknown_name_without_close_match_still_lists_available(strategies):
    with pytest.raises(UnknownNameError) as info:
        strategies.get("xyzzy")
    msg = str(info.value)
    assert "did you mean" not in msg
    assert "available: ['finetune', 'gradual_unfreeze', 'linear_probe']" in msg


def test_unknown_name_error_is_a_user_error_and_a_key_error(strategies):
    with pytest.raises(KeyError):
        strategies.get("nope")
    with pytest.raises(UserError):
        strategies.get("nope")
    err = UnknownNameError("unknown strategy 'x'")
    assert isinstance(err, KeyError) and isinstance(err, UserError)
    assert str(err) == "unknown strategy 'x'"  # not quoted as KeyError would do


def test_suggest_is_case_insensitive_and_returns_original_spelling():
    assert suggest("CXR", ["cxr", "Hand", "HeadCT"]) == ["cxr"]
    assert suggest("hnad", ["AbdomenCT", "Hand"]) == ["Hand"]
    assert suggest("zzz", ["Hand"]) == []
