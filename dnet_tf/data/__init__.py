"""Data: Pascal VOC reading, TFRecords, the embedded synthetic dataset, and the §6 sample pipeline.

Modules: voc (reader), tfrecord (Object Detection API format), synthetic (default dataset),
sampler (graph-only crop sampling), pipeline (tf.data datasets for the two networks),
stats (k-means aspect ratios and counts), cli (the dnet-data command).
"""
