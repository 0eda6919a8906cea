"""Offline detection at scale: an Apache Beam pipeline over the exported SavedModel.

Modules: ``pipeline`` (reading image files or TF OD API TFRecords, the RunInference model handler,
JSON-lines / TFRecord / dead-letter outputs), ``__main__`` (``python -m dnet_tf.batch``, Beam's
standard pipeline options). Needs the ``beam`` extra (``pip install dnet-tf[beam]``).
"""
