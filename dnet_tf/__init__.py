"""dnet-tf: DetectorNet (Szegedy, Toshev, Erhan, NIPS 2013) in TensorFlow/Keras.

Layout, from the bottom up:
  dnet_tf.ops         pure, stateless TF ops (boxes, mask targets, integral image, box search,
                      windows, paste-back/merge, NMS). No Keras models here.
  dnet_tf.data        Pascal VOC reader, TFRecords, the embedded synthetic dataset, the paper's
                      training-sample pipeline on tf.data.
  dnet_tf.models      thin Keras models: backbones, the five-head localizer, the classifier;
                      the loss.
  dnet_tf.training    the paper's recipe and the resumable training CLI.
  dnet_tf.inference   Algorithm 1 as one tf.function graph (a tf.Module), local detect API/CLI.
  dnet_tf.export      SavedModel export (versioned, atomic, warm-up requests).
  dnet_tf.evaluation  VOC AP, Table 1 / Figures 3-4, the sliding-window baseline.
  dnet_tf.serving     gRPC/REST client and a local server speaking TF Serving's API.
  dnet_tf.tflite      TFLite conversion, quantization and the NumPy edge pipeline.
"""

__version__ = "0.1.0"
