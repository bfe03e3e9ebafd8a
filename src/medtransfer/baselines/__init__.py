"""Non-neural baselines run as arms of a study on the same subsets as the networks (radiomics + logistic regression).

Importing this package imports nothing heavy; pyradiomics is loaded when a feature is first extracted.
"""
