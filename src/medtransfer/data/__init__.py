"""Data layer: one contract (:class:`ImageDataset`) for every source, decoded-image cache, patient-grouped splits."""
