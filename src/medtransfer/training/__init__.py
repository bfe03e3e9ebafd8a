"""Training: learning-rate policies (:mod:`~medtransfer.training.schedules`) and the learning-rate range test
(:mod:`~medtransfer.training.lr_finder`)."""
