"""Library warnings reach the user as one readable line naming the library, not as Python source."""

from __future__ import annotations

import warnings

import numpy as np

from medtransfer.logs import setup_logging


def test_a_numpy_warning_is_one_line_naming_the_library(capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        setup_logging()
        np.mean(np.array([]))
    err = capsys.readouterr().err
    assert "numpy RuntimeWarning: Mean of empty slice" in " ".join(err.split())
    assert "np.mean" not in err and ".py:" not in err


def test_a_long_scikit_learn_warning_is_cut_short(capsys):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        setup_logging()
        LogisticRegression(max_iter=1).fit(np.random.default_rng(0).random((40, 3)), np.arange(40) % 2)
    err = " ".join(capsys.readouterr().err.split())
    assert f"sklearn {ConvergenceWarning.__name__}: lbfgs failed to converge" in err and "…" in err
