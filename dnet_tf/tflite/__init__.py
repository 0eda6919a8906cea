"""TFLite for edge teams: the two networks converted (``convert``), the rest of Algorithm 1 in
NumPy around the interpreter (``edge_ops``, ``edge_pipeline``), and the parity/size/latency/mAP
report over a trained run (``report``, ``cli``).

    python -m dnet_tf.tflite.cli --run_dir runs/default --out runs/default/tflite \\
        --data data/synthetic
"""
