"""Named orders and constants used across the package (no TensorFlow: ``dnet_tf.core`` uses them).

The five mask types are defined once, here, in the order used everywhere (tensor axes, heads,
files): full, top, bottom, left, right.
"""

MASK_TYPES = ("full", "top", "bottom", "left", "right")
NUM_MASK_TYPES = len(MASK_TYPES)
FULL, TOP, BOTTOM, LEFT, RIGHT = range(NUM_MASK_TYPES)

# Mask-type permutation applied by a horizontal flip: left and right swap, the rest stay.
HFLIP_PERMUTATION = (FULL, TOP, BOTTOM, RIGHT, LEFT)

# Class ids. Inside the package a class is its 0-based index k into the class list. The
# classifier's output index 0 is background and class k sits at index k + CLASS_ID_OFFSET; the
# exported detection_classes use the same numbering (1-based, 0 = padding), as the TF Object
# Detection API does.
BACKGROUND_CLASS_ID = 0
CLASS_ID_OFFSET = 1

# Pascal VOC's 20 classes, the default class list for VOC data.
VOC_CLASSES = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
