"""The request budget of the graph (dnet_tf.inference.budget, decode.decode_batch) and the GIF
frame walk, on real encoded images; values worked by hand."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from bench import adversarial_inputs as adv
from dnet_tf.config import DetectorConfig, InferenceConfig
from dnet_tf.inference.budget import RequestBudget, resolution_side, uint8_batch_within
from dnet_tf.inference.decode import decode_batch, gif_frame_pixels

BUDGET = RequestBudget(
    max_image_pixels=10_000_000, max_image_side=256, max_images=4, max_request_pixels=4 * 256**2
)


def _png(pixels):
    return adv.encode(np.asarray(pixels, np.uint8), "PNG")


@pytest.fixture(scope="module")
def decode():
    """decode_batch traced once over an unknown batch size, as in the exported signature."""
    return tf.function(
        lambda s: decode_batch(s, BUDGET), input_signature=[tf.TensorSpec([None], tf.string)]
    )


def test_resolution_side_from_the_window_geometry():
    cfg = DetectorConfig()
    # finest of 3 scales: windows 1/4 of the image side, each resized to 225 px -> 900 px
    assert resolution_side(cfg.model.input_size, cfg.inference.num_scales) == 900
    assert cfg.inference.max_image_side >= 900
    assert resolution_side(225, 1) == 225 and resolution_side(64, 4) == 512


def test_large_image_is_brought_to_the_side_small_ones_pass_unchanged(decode):
    rng = np.random.RandomState(0)
    small = rng.randint(0, 256, (30, 50, 3)).astype(np.uint8)
    flat = np.full((600, 400, 3), 77, np.uint8)  # 600 x 400 -> 256 x round(400 * 256 / 600) = 171
    images, sizes = decode(tf.constant([_png(flat), _png(small)]))
    assert sizes.numpy().tolist() == [[256, 171], [30, 50]]
    assert images.shape == (2, 256, 171, 3)
    # a flat image stays flat under the antialiased resize; the small one is bit-exact
    np.testing.assert_allclose(images[0].numpy(), 77.0, atol=1e-3)
    np.testing.assert_array_equal(images[1, :30, :50].numpy(), small.astype(np.float32))
    assert float(tf.reduce_max(tf.abs(images[1, 30:]))) == 0.0  # padding


def test_limits_answer_invalid_argument_naming_the_field(decode):
    tiny = _png(np.zeros((1, 1, 3)))
    with pytest.raises(tf.errors.InvalidArgumentError, match="max_images_per_request = 4"):
        decode(tf.constant([tiny] * 5))
    # One 512 x 512 image (256 x 256 after resizing) and 3 tiny ones pad to 4 x 256 x 256:
    # exactly the budget; with a budget of 3 x 256^2 the same request is refused.
    big = _png(np.zeros((512, 512, 3)))
    images, _ = decode(tf.constant([big] + [tiny] * 3))
    assert images.shape == (4, 256, 256, 3)
    tight = RequestBudget(10_000_000, 256, 8, 3 * 256**2)
    fn = tf.function(
        lambda s: decode_batch(s, tight), input_signature=[tf.TensorSpec([None], tf.string)]
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match="max_request_pixels = 196608"):
        fn(tf.constant([big] + [tiny] * 3))
    with pytest.raises(tf.errors.InvalidArgumentError, match="image declares more than 10000000"):
        decode(tf.constant([adv.png_header_bomb(4000, 4000)]))


def test_uint8_signature_under_the_same_budget():
    fn = tf.function(
        lambda x: uint8_batch_within(x, BUDGET),
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)],
    )
    images, sizes = fn(tf.fill([2, 300, 1200, 3], tf.constant(9, tf.uint8)))
    assert sizes.numpy().tolist() == [[64, 256], [64, 256]]  # 300 * 256 / 1200 = 64
    np.testing.assert_allclose(images.numpy(), 9.0, atol=1e-3)
    same, sizes = fn(tf.ones([1, 20, 30, 3], tf.uint8))
    assert sizes.numpy().tolist() == [[20, 30]] and same.shape == (1, 20, 30, 3)
    with pytest.raises(tf.errors.InvalidArgumentError, match="max_images_per_request"):
        fn(tf.zeros([5, 2, 2, 3], tf.uint8))
    with pytest.raises(tf.errors.InvalidArgumentError, match="max_image_pixels"):
        fn(tf.zeros([1, 4000, 2501, 3], tf.uint8))
    with pytest.raises(tf.errors.InvalidArgumentError, match="max_request_pixels"):
        # 4 images of 256 x 256 fit; the limit is on padded pixels, so 4 x 256 x 257 does not
        tight = RequestBudget(10_000_000, 512, 8, 4 * 256 * 256)
        tf.function(
            lambda x: uint8_batch_within(x, tight),
            input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)],
        )(tf.zeros([4, 256, 257, 3], tf.uint8))


def test_gif_frames_walked_and_the_frame_bomb_refused(decode):
    rng = np.random.RandomState(1)
    frames = [Image.fromarray(rng.randint(0, 256, (30, 40, 3), np.uint8)) for _ in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    gif = buf.getvalue()
    assert len(adv.gif_frame_offsets(gif)) == 3
    # three full 30 x 40 frames: largest 1200, all 3600 pixels
    assert gif_frame_pixels(tf.constant(gif)).numpy().tolist() == [1200, 3600]
    images, sizes = decode(tf.constant([gif]))
    assert sizes.numpy().tolist() == [[30, 40]]
    bomb = adv.gif_frame_bomb(60_000, 60_000)
    assert gif_frame_pixels(tf.constant(bomb)).numpy().tolist() == [3.6e9, 3.6e9 + 16]
    with pytest.raises(tf.errors.InvalidArgumentError, match="GIF frame declares more than"):
        decode(tf.constant([bomb]))
    # a walk that runs off the end of truncated data stops there
    assert gif_frame_pixels(tf.constant(gif[:40])).numpy()[0] <= 1200


def test_budget_fields_validated_and_recorded():
    with pytest.raises(ValueError, match="max_request_pixels"):
        InferenceConfig(max_image_side=1024, max_request_pixels=1000).validate()
    with pytest.raises(ValueError, match="max_images_per_request"):
        InferenceConfig(max_images_per_request=0).validate()
    d = DetectorConfig().to_dict()["inference"]
    assert (d["max_image_side"], d["max_images_per_request"], d["max_request_pixels"]) == (
        1024,
        16,
        8 * 1024 * 1024,
    )
    assert (
        DetectorConfig.from_dict({"inference": {"max_image_side": 900}}).inference.max_image_side
        == 900
    )
