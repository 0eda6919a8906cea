"""The paper's training recipe, a resumable run directory, tf.distribute.

recipe     optimizer, classifier -> localizer weight transfer, distributed train steps
train      train(run_dir, data, cfg, ...): both stages, checkpoints, final artifacts, summary
run_dir    the run directory's files and load_run(run_dir) -> RunArtifacts
metrics    full-mask IoU on held-out crops (mask_iou), classifier accuracy
sources    DataSource: the data pipeline, or in-graph toy crops for tests and benchmarks
distribute strategy selection (default / Mirrored / MultiWorkerMirrored from TF_CONFIG)
tb         TensorBoard scalars (event files) without the tensorboard package
cli        python -m dnet_tf.training.cli
"""
