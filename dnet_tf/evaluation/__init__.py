"""Evaluation: Pascal VOC AP, the paper's Table 1 and Figures 3-4, the sliding-window baseline (§7).

Modules (import them directly; this package imports nothing heavy on its own):
  voc_ap          evaluate_detections(ground_truth, detections, num_classes, iou_threshold=0.5,
                  use_07_metric=True) -> VocResult; average_precision; iou_matrix. NumPy only.
  table           Table / TableRow: the Table 1 layout as markdown and JSON; the paper's rows.
  pictures        draw_detections (Figure 3), plot_precision_recall (Figure 4); matplotlib Agg.
  sliding_window  SlidingWindowConfig, SlidingWindowDetector, sliding_window_detect, count_boxes.
  runner          evaluate_split(detector, records, out_dir, baseline=None, options=None).
  cli             python -m dnet_tf.evaluation.cli (the dnet-eval command).
"""
