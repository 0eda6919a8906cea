"""Pascal VOC reader: hand-written files (good and bad, fail and skip modes) and the real raccoon
set."""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from dnet_tf.data import voc
from dnet_tf.data.pipeline import _decode, load_class_names
from dnet_tf.ops.boxes import voc_to_yxyx

CLASSES = ["cat", "dog"]


def xml_text(objects, width=40, height=30, filename="img.jpg", size=True):
    objs = ""
    for name, (x0, y0, x1, y1), difficult, truncated in objects:
        objs += (
            f"<object><name>{name}</name><pose>Left</pose><truncated>{truncated}</truncated>"
            f"<difficult>{difficult}</difficult><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>"
            f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
        )
    size_xml = (
        f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>"
        if size
        else ""
    )
    head = f"<annotation><folder>VOC</folder><filename>{filename}</filename>"
    return f"{head}{size_xml}{objs}</annotation>"


def make_voc(root, files: dict, images: dict, split="train"):
    """files: id -> XML text; images: id -> (W, H) or None (no image file)."""
    for d in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for image_id, text in files.items():
        (root / "Annotations" / f"{image_id}.xml").write_text(text)
        if images.get(image_id) is not None:
            Image.new("RGB", images[image_id], (10, 20, 30)).save(
                root / "JPEGImages" / f"{image_id}.jpg"
            )
    (root / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in files))
    return root


def test_numpy_twin_agrees_with_tf_conversion():
    rng = np.random.default_rng(0)
    v = rng.uniform(1, 500, (50, 4)).astype(np.float32)
    np.testing.assert_allclose(
        voc.voc_box_to_yxyx(v), voc_to_yxyx(tf.constant(v)).numpy(), atol=1e-4
    )
    # Hand-worked: VOC (1, 1, W, H) is the whole W x H image.
    np.testing.assert_array_equal(voc.voc_box_to_yxyx([1, 1, 40, 30]), [0, 0, 30, 40])


def test_good_file_float_coords_difficult_truncated(tmp_path):
    text = xml_text(
        [("dog", (1.5, 2, 10, 8.5), 1, 0), ("cat", (1, 1, 40, 30), 0, 1)], filename="a.jpg"
    )
    make_voc(tmp_path, {"a": text}, {"a": (40, 30)})
    (rec,) = voc.read_voc_split(tmp_path, "train", CLASSES)
    # VOC (xmin 1.5, ymin 2, xmax 10, ymax 8.5) -> continuous [ymin - 1, xmin - 1, ymax, xmax].
    np.testing.assert_allclose(
        rec.boxes_image_yxyx, [[1.0, 0.5, 8.5, 10.0], [0.0, 0.0, 30.0, 40.0]]
    )
    assert rec.class_names == ["dog", "cat"]
    np.testing.assert_array_equal(rec.class_ids, [1, 0])
    np.testing.assert_array_equal(rec.difficult, [True, False])
    np.testing.assert_array_equal(rec.truncated, [False, True])
    assert (rec.height, rec.width) == (30, 40)
    assert rec.image_path.endswith("a.jpg")


def test_image_without_objects_and_without_size(tmp_path):
    make_voc(tmp_path, {"e": xml_text([], size=False, filename="e.jpg")}, {"e": (17, 9)})
    (rec,) = voc.read_voc_split(tmp_path, "train", CLASSES)
    assert rec.boxes_image_yxyx.shape == (0, 4) and (rec.height, rec.width) == (9, 17)


BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<annotation><filename>&lol3;</filename></annotation>"""

EXTERNAL_ENTITY = """<?xml version="1.0"?>
<!DOCTYPE a [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<annotation><filename>&xxe;</filename></annotation>"""

# id -> (XML text, image size or None, expected words in the message)
BAD_CASES = {
    "malformed": (xml_text([("cat", (1, 1, 5, 5), 0, 0)])[:-5], (40, 30), "malformed XML"),
    "entity_bomb": (BILLION_LAUGHS, (40, 30), "unsafe XML"),
    "external_entity": (EXTERNAL_ENTITY, (40, 30), "unsafe XML"),
    "outside": (xml_text([("cat", (1, 1, 41, 30), 0, 0)]), (40, 30), "outside the 40x30 image"),
    "zero_coordinate": (xml_text([("cat", (0, 1, 10, 10), 0, 0)]), (40, 30), "outside"),
    "inverted": (xml_text([("dog", (20, 5, 10, 15), 0, 0)]), (40, 30), "inverted or empty box"),
    "size_mismatch": (
        xml_text([("cat", (1, 1, 5, 5), 0, 0)], width=40, height=30),
        (41, 30),
        "<size> says 40x30",
    ),
    "missing_image": (
        xml_text([("cat", (1, 1, 5, 5), 0, 0)], filename="nowhere.jpg"),
        None,
        "image not found",
    ),
    "not_a_number": (xml_text([("cat", (1, "one", 5, 5), 0, 0)]), (40, 30), "is not a number"),
    "unknown_class": (
        xml_text([("horse", (1, 1, 5, 5), 0, 0)]),
        (40, 30),
        "'horse' is not in the class list",
    ),
    "no_bndbox": (
        "<annotation><filename>x.jpg</filename><object><name>cat</name></object></annotation>",
        (40, 30),
        "missing <bndbox>",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_file_fail_mode_names_the_file(tmp_path, case):
    text, size, words = BAD_CASES[case]
    make_voc(tmp_path, {case: text}, {case: size})
    with pytest.raises(voc.VocError) as err:
        voc.read_voc_split(tmp_path, "train", CLASSES, on_error="fail")
    assert f"{case}.xml" in str(err.value)
    assert words in str(err.value)


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_file_skip_mode_warns_and_keeps_the_rest(tmp_path, case):
    text, size, words = BAD_CASES[case]
    good = xml_text([("cat", (2, 3, 12, 13), 0, 0)], filename="good.jpg")
    make_voc(tmp_path, {"good": good, case: text}, {"good": (40, 30), case: size})
    with pytest.warns(voc.VocWarning, match=words.replace("(", r"\(")) as caught:
        records = voc.read_voc_split(tmp_path, "train", CLASSES, on_error="skip")
    assert any(f"{case}.xml" in str(w.message) for w in caught)
    assert [r.image_id for r in records] == ["good"]
    np.testing.assert_allclose(records[0].boxes_image_yxyx, [[2.0, 1.0, 13.0, 12.0]])


def test_unknown_classes_can_be_ignored_explicitly(tmp_path):
    make_voc(
        tmp_path,
        {"a": xml_text([("horse", (1, 1, 5, 5), 0, 0), ("dog", (1, 1, 9, 9), 0, 0)])},
        {"a": (40, 30)},
    )
    (rec,) = voc.read_voc_split(tmp_path, "train", CLASSES, ignore_unknown_classes=True)
    assert rec.class_names == ["dog"]


def test_bad_policy_and_missing_split_are_clear(tmp_path):
    make_voc(tmp_path, {"a": xml_text([])}, {"a": (40, 30)})
    with pytest.raises(ValueError, match="on_error"):
        voc.read_voc_split(tmp_path, "train", CLASSES, on_error="ignore")
    with pytest.raises(voc.VocError, match="split file not found.*train"):
        voc.read_voc_split(tmp_path, "val", CLASSES)


def test_raccoon_every_file(raccoon_dir):
    records = []
    for split in ("train", "test"):
        records += voc.read_voc_split(raccoon_dir, split, ["raccoon"], on_error="fail")
    assert len(records) == 200
    assert sum(r.num_objects for r in records) == 217
    by_id = {r.image_id: r for r in records}
    # raccoon-1.xml: 650 x 417, VOC box (81, 88, 522, 408) -> [87, 80, 408, 522].
    np.testing.assert_allclose(by_id["raccoon-1"].boxes_image_yxyx, [[87.0, 80.0, 408.0, 522.0]])
    assert (by_id["raccoon-1"].height, by_id["raccoon-1"].width) == (417, 650)
    for r in records:
        b = r.boxes_image_yxyx
        assert np.all(b[:, 0] >= 0) and np.all(b[:, 2] <= r.height) and np.all(b[:, 3] <= r.width)
        assert np.all(b[:, 2] > b[:, 0]) and np.all(b[:, 3] > b[:, 1])
    grey = [r for r in records if Image.open(r.image_path).mode == "L"]
    assert len(grey) == 3
    for r in grey:
        img = _decode(tf.io.read_file(r.image_path)).numpy()
        assert img.shape == (r.height, r.width, 3)
        np.testing.assert_array_equal(img[..., 0], img[..., 1])
        np.testing.assert_array_equal(img[..., 1], img[..., 2])
    assert load_class_names(str(raccoon_dir), "train") == ["raccoon"]


def test_class_names_from_the_data_need_no_size_or_image(tmp_path):
    files = {
        "a": xml_text([("dog", (1, 1, 5, 5), 0, 0)], size=False),
        "b": xml_text([("cat", (1, 1, 5, 5), 0, 0)]),
    }
    make_voc(tmp_path, files, {"a": None, "b": None})
    assert voc.read_class_names(tmp_path, "train") == ["cat", "dog"]
    (tmp_path / "Annotations" / "b.xml").write_text(BILLION_LAUGHS)
    with pytest.raises(voc.VocError, match="b.xml.*unsafe XML"):
        voc.read_class_names(tmp_path, "train")
