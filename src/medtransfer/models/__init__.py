"""Models: backbones by name, registered or any timm architecture (:mod:`.backbones`), the one weights loader
(:mod:`.weights`) and the catalogue of named source models (:mod:`.catalogue`: ``medtransfer sources list``, a
study's ``study.sources``).

* :func:`medtransfer.models.backbones.build_model` builds a :class:`~medtransfer.models.backbones.Classifier`
  (a timm backbone + dropout/linear head) with random weights, its layer groups by family; nothing is downloaded.
* :func:`medtransfer.models.weights.create_model` builds it and loads weights described by a
  :class:`~medtransfer.models.weights.WeightsSpec` (scratch, a file, a source-model folder, a timm Hugging Face
  folder, or ImageNet weights from the local cache).

Nothing is imported or registered on ``import medtransfer.models``; import the modules by name.
"""
