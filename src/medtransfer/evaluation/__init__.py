"""Evaluation: pure functions on numpy arrays (AUC, thresholds, bootstrap CIs, DeLong, paired tests)."""
