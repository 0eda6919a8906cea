"""Named orders and constants used across the package.

The five mask types are defined once, here, in the order used everywhere (tensor axes, heads,
files): full, top, bottom, left, right.
"""

MASK_TYPES = ("full", "top", "bottom", "left", "right")
NUM_MASK_TYPES = len(MASK_TYPES)
FULL, TOP, BOTTOM, LEFT, RIGHT = range(NUM_MASK_TYPES)

# Opposite half of each half mask, for Eq. (3). The full mask's "opposite" is a ring around the
# box, handled separately (see InferenceConfig.ring_margin).
OPPOSITE = {TOP: BOTTOM, BOTTOM: TOP, LEFT: RIGHT, RIGHT: LEFT}

# Mask-type permutation applied by a horizontal flip: left and right swap, the rest stay.
HFLIP_PERMUTATION = (FULL, TOP, BOTTOM, RIGHT, LEFT)

# Class id 0 is background inside the classifier; exported detection_classes are 1-based.
BACKGROUND_CLASS_ID = 0

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
