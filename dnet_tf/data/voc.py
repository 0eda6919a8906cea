"""Pascal VOC reader: Annotations/<id>.xml, JPEGImages/, ImageSets/Main/<split>.txt.

VOC's 1-based inclusive pixel boxes become continuous image_yxyx (``xmin = xmin_voc - 1``,
``xmax = xmax_voc``; same for y) in ``voc_box_to_yxyx``, through the one conversion of
``dnet_tf.core.boxes`` (a test checks the graph's agrees). Float
coordinates (VOC2012 has some) are read as floats.

XML is parsed with defusedxml, so entity expansion ("billion laughs"), external entities and DTDs
are refused. Every problem found in a file — malformed XML, a missing field, a box outside the
image or inverted, a missing image, an XML size that disagrees with the real image — raises a
``VocError`` that names the file. ``read_voc_split(..., on_error="skip")`` instead drops the whole
image with a warning (dropping only the bad box would leave an unlabelled object in the image);
``on_error="fail"`` (the default) stops at the first problem. No box is ever silently altered.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import warnings
from collections.abc import Sequence
from xml.etree.ElementTree import Element

import numpy as np
from defusedxml import DefusedXmlException
from defusedxml import ElementTree as SafeET
from PIL import Image, UnidentifiedImageError

from dnet_tf.core import boxes as core_boxes

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".JPG", ".JPEG", ".PNG")
ON_ERROR_CHOICES = ("fail", "skip")


class VocError(ValueError):
    """A problem in a VOC file; the message starts with the file's path."""

    def __init__(self, path, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem


class VocWarning(UserWarning):
    """Emitted for every image dropped by ``on_error='skip'``."""


@dataclasses.dataclass
class VocRecord:
    """One annotated image.

    Attributes:
      image_id: the id listed in ImageSets/Main/<split>.txt (file stem of the XML).
      image_path: path of the image file.
      annotation_path: path of the XML file.
      height, width: image size in px (the XML's, checked against the image when asked).
      boxes_image_yxyx: float32 [N, 4], continuous absolute [ymin, xmin, ymax, xmax].
      class_names: list of N object names as written in the XML.
      class_ids: int32 [N], 0-based ids into the class list used to read, or -1 when read
        without one.
      difficult, truncated: bool [N].
    """

    image_id: str
    image_path: str
    annotation_path: str
    height: int
    width: int
    boxes_image_yxyx: np.ndarray
    class_names: list
    class_ids: np.ndarray
    difficult: np.ndarray
    truncated: np.ndarray

    @property
    def num_objects(self) -> int:
        return int(self.boxes_image_yxyx.shape[0])


def voc_box_to_yxyx(voc_xyxy) -> np.ndarray:
    """VOC 1-based inclusive [xmin, ymin, xmax, ymax] [..., 4] -> continuous image_yxyx float32
    [..., 4] (``dnet_tf.core.boxes.voc_to_yxyx``, in float64 then rounded once)."""
    return core_boxes.voc_to_yxyx(np.asarray(voc_xyxy, np.float64)).astype(np.float32)


def _text(
    node: Element, tag: str, path, required: bool = True, default: str | None = None
) -> str | None:
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        if required:
            raise VocError(path, f"missing <{tag}>")
        return default
    return child.text.strip()


def _number(node: Element, tag: str, path, where: str) -> float:
    raw = _text(node, tag, path)
    try:
        value = float(raw)
    except ValueError:
        raise VocError(path, f"{where}: <{tag}> is not a number: {raw!r}") from None
    if not np.isfinite(value):
        raise VocError(path, f"{where}: <{tag}> is not finite: {raw!r}")
    return value


def _flag(node: Element, tag: str, path, where: str) -> bool:
    raw = _text(node, tag, path, required=False, default="0")
    try:
        return bool(int(float(raw)))
    except ValueError:
        raise VocError(path, f"{where}: <{tag}> must be 0 or 1, got {raw!r}") from None


def _find_image(
    image_dir: pathlib.Path, image_id: str, filename: str | None
) -> pathlib.Path | None:
    candidates = []
    if filename:
        candidates.append(image_dir / os.path.basename(filename))
    candidates += [image_dir / f"{image_id}{ext}" for ext in IMAGE_EXTENSIONS]
    for c in candidates:
        if c.is_file():
            return c
    return None


def _parse_xml(path: pathlib.Path) -> Element:
    """The root element of an annotation file, parsed with defusedxml.

    Raises:
      VocError naming the file: unsafe XML (entities, DTD), malformed XML, unreadable file.
    """
    try:
        return SafeET.parse(str(path)).getroot()
    except DefusedXmlException as e:
        raise VocError(path, f"refused unsafe XML ({type(e).__name__}: {e})") from None
    except SafeET.ParseError as e:
        raise VocError(path, f"malformed XML ({e})") from None
    except OSError as e:
        raise VocError(path, f"cannot read annotation ({e})") from None


def parse_voc_xml(
    annotation_path,
    image_dir,
    class_names: Sequence[str] | None = None,
    check_image: bool = True,
    ignore_unknown_classes: bool = False,
) -> VocRecord:
    """Reads one VOC annotation file.

    Args:
      annotation_path: path of Annotations/<id>.xml.
      image_dir: the JPEGImages/ directory; the image is <filename> from the XML, else <id>.<ext>.
      class_names: the class list; ids are indices into it. None: class_ids are all -1.
      check_image: open the image header (cheap, no decode) and compare its size with the XML's;
        a missing or unreadable image is an error. When the XML has no size, the image's is used.
      ignore_unknown_classes: drop objects whose name is not in ``class_names`` (e.g. training on a
        subset of VOC's classes) instead of raising.
    Returns:
      VocRecord with boxes in continuous image_yxyx.
    Raises:
      VocError naming the file: malformed XML, forbidden XML constructs (entities, DTD), missing or
      non-numeric fields, unknown class, inverted or empty box, box outside the image, missing
      image, image size differing from the XML's.
    """
    path = pathlib.Path(annotation_path)
    image_dir = pathlib.Path(image_dir)
    root = _parse_xml(path)
    if root.tag != "annotation":
        raise VocError(path, f"root element is <{root.tag}>, expected <annotation>")

    image_id = path.stem
    filename = _text(root, "filename", path, required=False)
    xml_w = xml_h = 0
    size = root.find("size")
    if size is not None and size.find("width") is not None and size.find("height") is not None:
        xml_w = int(round(_number(size, "width", path, "<size>")))
        xml_h = int(round(_number(size, "height", path, "<size>")))

    image_path = _find_image(image_dir, image_id, filename)
    if check_image:
        if image_path is None:
            raise VocError(
                path, f"image not found in {image_dir} (filename {filename!r}, id {image_id!r})"
            )
        try:
            with Image.open(image_path) as im:
                real_w, real_h = im.size
        except (OSError, UnidentifiedImageError) as e:
            raise VocError(path, f"cannot read image {image_path} ({e})") from None
        if xml_w > 0 and xml_h > 0 and (xml_w, xml_h) != (real_w, real_h):
            raise VocError(
                path,
                f"<size> says {xml_w}x{xml_h} (WxH) but {image_path.name} is {real_w}x{real_h}",
            )
        width, height = real_w, real_h
    else:
        if xml_w <= 0 or xml_h <= 0:
            raise VocError(
                path, "<size> missing or zero and check_image=False, so the image size is unknown"
            )
        width, height = xml_w, xml_h
        if image_path is None:
            image_path = image_dir / (os.path.basename(filename) if filename else f"{image_id}.jpg")

    known = {name: i for i, name in enumerate(class_names)} if class_names is not None else None
    boxes, names, ids, difficult, truncated = [], [], [], [], []
    for n, obj in enumerate(root.findall("object")):
        where = f"object {n}"
        name = _text(obj, "name", path)
        where = f"object {n} ({name})"
        if known is not None and name not in known:
            if ignore_unknown_classes:
                continue
            raise VocError(
                path,
                f"{where}: class {name!r} is not in the class list "
                f"({len(known)} classes: {', '.join(list(known)[:5])}...)",
            )
        bnd = obj.find("bndbox")
        if bnd is None:
            raise VocError(path, f"{where}: missing <bndbox>")
        voc = [_number(bnd, t, path, where) for t in ("xmin", "ymin", "xmax", "ymax")]
        ymin, xmin, ymax, xmax = voc_box_to_yxyx(voc).tolist()
        if not (xmax > xmin and ymax > ymin):
            raise VocError(
                path, f"{where}: inverted or empty box (VOC xmin, ymin, xmax, ymax = {voc})"
            )
        if xmin < 0 or ymin < 0 or xmax > width or ymax > height:
            raise VocError(
                path,
                f"{where}: box (VOC xmin, ymin, xmax, ymax = {voc}) lies outside the "
                f"{width}x{height} image (VOC coordinates run from 1 to W and 1 to H)",
            )
        boxes.append([ymin, xmin, ymax, xmax])
        names.append(name)
        ids.append(known[name] if known is not None else -1)
        difficult.append(_flag(obj, "difficult", path, where))
        truncated.append(_flag(obj, "truncated", path, where))

    return VocRecord(
        image_id=image_id,
        image_path=str(image_path),
        annotation_path=str(path),
        height=int(height),
        width=int(width),
        boxes_image_yxyx=np.asarray(boxes, np.float32).reshape(-1, 4),
        class_names=names,
        class_ids=np.asarray(ids, np.int32),
        difficult=np.asarray(difficult, bool),
        truncated=np.asarray(truncated, bool),
    )


def read_split_ids(voc_root, split: str) -> list:
    """Image ids of ImageSets/Main/<split>.txt (first token of each non-empty line)."""
    path = pathlib.Path(voc_root) / "ImageSets" / "Main" / f"{split}.txt"
    if not path.is_file():
        raise VocError(path, f"split file not found (splits present: {available_splits(voc_root)})")
    ids = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if parts:
            ids.append(parts[0])
    return ids


def available_splits(voc_root) -> list:
    main = pathlib.Path(voc_root) / "ImageSets" / "Main"
    if not main.is_dir():
        return []
    return sorted(p.stem for p in main.glob("*.txt") if "_" not in p.stem)


class VocSplit(list):
    """The VocRecords of a split (a list), with what was left out or repaired on the way.

    Attributes:
      skipped: one "<image id>: <file>: <problem>" line per image dropped under on_error="skip".
      recovered: paths of images TF decoded only with its truncated-JPEG recovery (kept).
    """

    def __init__(self, records=(), skipped=(), recovered=()):
        super().__init__(records)
        self.skipped = list(skipped)
        self.recovered = list(recovered)

    def __getitem__(self, index):
        got = super().__getitem__(index)
        return VocSplit(got, self.skipped, self.recovered) if isinstance(index, slice) else got

    def report(self) -> dict:
        """JSON-able counts and names of skipped and recovered images."""
        return {
            "skipped_images": len(self.skipped),
            "skipped": list(self.skipped),
            "recovered_images": len(self.recovered),
            "recovered": list(self.recovered),
        }


def read_voc_split(
    voc_root,
    split: str,
    class_names: Sequence[str] | None = None,
    on_error: str = "fail",
    check_image: bool = True,
    ignore_unknown_classes: bool = False,
    check_decode: bool = True,
) -> VocSplit:
    """Reads every image of a split.

    Args:
      voc_root: directory holding Annotations/, JPEGImages/, ImageSets/Main/.
      split: name of ImageSets/Main/<split>.txt.
      class_names: the class list (ids index it); None leaves class_ids at -1
        (see ``class_names_in``).
      on_error: "fail" raises the first VocError; "skip" drops each image with a problem and
        warns (VocWarning) with the file and the problem.
      check_image, ignore_unknown_classes: see ``parse_voc_xml``.
      check_decode: with check_image, decode every image once with the pipeline's decoder
        (``image_files``): a file TF cannot decode is a problem of its image; a truncated JPEG TF
        recovers is kept, with a warning.
    Returns:
      VocSplit (a list of VocRecord, in split-file order, with ``skipped`` and ``recovered``).
    """
    if on_error not in ON_ERROR_CHOICES:
        raise ValueError(f"on_error must be one of {ON_ERROR_CHOICES}, got {on_error!r}")
    root = pathlib.Path(voc_root)
    records = VocSplit()
    for image_id in read_split_ids(root, split):
        ann = root / "Annotations" / f"{image_id}.xml"
        try:
            if not ann.is_file():
                raise VocError(ann, "annotation file not found")
            record = parse_voc_xml(
                ann, root / "JPEGImages", class_names, check_image, ignore_unknown_classes
            )
            if check_image and check_decode:
                from dnet_tf.data import image_files  # TensorFlow, only when decoding

                decoded = image_files.check_image_file(record.image_path)
                if not decoded.ok:
                    raise VocError(ann, decoded.problem)
                if decoded.recovered:
                    records.recovered.append(record.image_path)
                    warnings.warn(decoded.problem, VocWarning, stacklevel=2)
            records.append(record)
        except VocError as e:
            if on_error == "fail":
                raise
            records.skipped.append(f"{image_id}: {e}")
            warnings.warn(f"skipping image {image_id!r}: {e}", VocWarning, stacklevel=2)
    return records


def read_class_names(voc_root, split: str) -> list:
    """The sorted set of object names in a split's annotations (reads only <object><name>).

    Raises:
      VocError naming the file for unreadable or unsafe XML or an object without a name.
    """
    root = pathlib.Path(voc_root)
    names = set()
    for image_id in read_split_ids(root, split):
        path = root / "Annotations" / f"{image_id}.xml"
        for obj in _parse_xml(path).findall("object"):
            names.add(_text(obj, "name", path))
    return sorted(names)


def class_names_in(records: Sequence[VocRecord]) -> list:
    """The sorted set of object names found in the records."""
    return sorted({name for r in records for name in r.class_names})


def is_voc_dir(path) -> bool:
    p = pathlib.Path(path)
    return (p / "Annotations").is_dir() and (p / "ImageSets" / "Main").is_dir()
