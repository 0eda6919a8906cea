"""The detector's rules, free of TensorFlow: what the graph and the edge pipeline share.

Both pipelines of Algorithm 1 -- the SavedModel's graph (``dnet_tf.inference.module``) and its
NumPy twin for mobile ports (``dnet_tf.tflite.edge_pipeline``) -- and the evaluation import their
rules from here, so each rule has one definition:

  xp          the array namespace the elementwise rules are written over (NumPy here; the
              TensorFlow one is ``dnet_tf.ops.xp.TENSORFLOW``)
  windows     the multi-scale window layout (paper §5.3)
  search      the box search's shape grid, whole-cell roundings and the Eq. (3) ring width
  policy      detection policy: confidence, refined agreement, part demotion, the invalid score
  boxes       box maths over an array namespace: area, intersection, IoU, frame changes, VOC
  nms         greedy NMS in NumPy with its tie rule (TensorFlow's kernel's), top-k order
  contracts   names shared across processes: run-directory files, SavedModel assets, outputs
  detections  ``Detections``, the one representation of one image's detections

Nothing here imports TensorFlow (a test checks it): a port, a client or an evaluation script
can use the rules without it.
"""
