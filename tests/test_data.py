"""Datasets, transforms and the shared preprocessing, on tiny fixtures written in the real formats."""
from __future__ import annotations

import functools
import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from mlic_edge.data import DATASETS, build_dataset, build_digits_dataset, build_transform, collate_skip_broken
from mlic_edge.data import datasets as datasets_module
from mlic_edge.data.transforms import Cutout, build_rand_augment
from mlic_edge.data.voc import VOC_CLASSES
from mlic_edge.core.errors import ConfigError, DatasetError
from mlic_edge.core.preprocess import load_image, preprocess, preprocess_batch

IMAGENET = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}


def write_image(path, size=(12, 10), colour=(200, 30, 90)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


# ---------------------------------------------------------------- preprocessing


@pytest.mark.parametrize("photo", ["astronaut", "coffee"])
@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
def test_preprocess_matches_torchvision(photo, interpolation):
    skimage_data = pytest.importorskip("skimage.data")
    image = Image.fromarray(getattr(skimage_data, photo)())
    size = 96
    ours = preprocess(image, size, interpolation=interpolation, **IMAGENET)
    reference = T.Compose([
        T.Resize((size, size), interpolation=T.InterpolationMode(interpolation)),
        T.ToTensor(),
        T.Normalize(**IMAGENET),
    ])(image).numpy()
    assert ours.dtype == np.float32 and ours.shape == (3, size, size)
    np.testing.assert_allclose(ours, reference, atol=1e-5, rtol=0)


def test_eval_transform_is_the_runtime_preprocessing():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 50, 3), dtype=np.uint8))
    spec = {"image_size": 32, "interpolation": "bilinear", "resize": "squash", **IMAGENET}
    tensor = build_transform(spec, train=False)(image)
    assert isinstance(tensor, torch.Tensor)
    np.testing.assert_array_equal(tensor.numpy(), preprocess(image, 32, interpolation="bilinear", **IMAGENET))


def test_one_pixel_image_is_resized():
    out = preprocess(Image.new("RGB", (1, 1), (255, 0, 0)), 8, mean=(0, 0, 0), std=(1, 1, 1))
    assert out.shape == (3, 8, 8)
    np.testing.assert_allclose(out[:, 0, 0], [1.0, 0.0, 0.0])


def test_load_image_converts_to_rgb(tmp_path):
    Image.new("L", (5, 4), 128).save(tmp_path / "grey.png")
    Image.new("RGBA", (5, 4), (10, 20, 30, 0)).save(tmp_path / "alpha.png")
    Image.fromarray(np.full((4, 5), 65535, dtype=np.uint16)).save(tmp_path / "deep.png")
    assert load_image(tmp_path / "grey.png").getpixel((0, 0)) == (128, 128, 128)
    assert load_image(tmp_path / "alpha.png").getpixel((0, 0)) == (10, 20, 30)
    assert load_image(tmp_path / "deep.png").getpixel((0, 0)) == (255, 255, 255)


def test_load_image_errors_name_the_file(tmp_path):
    (tmp_path / "junk.jpg").write_bytes(b"not an image at all")
    write_image(tmp_path / "full.png", size=(64, 64))
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    for name in ("missing.jpg", "junk.jpg", "cut.png"):
        with pytest.raises(DatasetError, match=name) as info:
            load_image(tmp_path / name)
        assert "\n" not in str(info.value)


def test_preprocess_batch_accepts_paths_and_images(tmp_path):
    path = write_image(tmp_path / "a.png")
    batch = preprocess_batch([path, load_image(path)], 16, interpolation="bicubic", **IMAGENET)
    assert batch.shape == (2, 3, 16, 16) and batch.dtype == np.float32
    np.testing.assert_array_equal(batch[0], batch[1])


def test_train_transform_shapes_and_bad_spec():
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 60, 3), dtype=np.uint8))
    spec = {"image_size": 24, "interpolation": "bicubic", "resize": "squash", **IMAGENET}
    out = build_transform(spec, train=True)(image)
    assert out.shape == (3, 24, 24) and out.dtype == torch.float32
    with pytest.raises(ConfigError, match="squash"):
        build_transform({**spec, "resize": "crop"}, train=True)
    with pytest.raises(ConfigError, match="image_size"):
        build_transform({"mean": IMAGENET["mean"]}, train=False)


def test_rand_augment_survives_top_magnitude():
    image = Image.fromarray(np.random.default_rng(2).integers(0, 256, (24, 24, 3), dtype=np.uint8))
    posterize_ops = [op for op in build_rand_augment(24, IMAGENET["mean"]).ops if op.name.startswith("Posterize")]
    assert posterize_ops
    for op in posterize_ops:
        op.prob, op.magnitude, op.magnitude_std = 1.0, 10, 0  # the level at which timm asks for 0 bits
        assert np.asarray(op(image)).any()


def test_cutout_paints_a_half_size_square():
    image = Image.new("RGB", (40, 40), (0, 0, 0))
    changed = 0
    for _ in range(20):
        out = np.asarray(Cutout(size_factor=0.5, p=1.0)(image))
        painted = np.argwhere(out.any(axis=2))
        if len(painted):  # a random colour of (0, 0, 0) is possible but never 20 times
            changed += 1
            extent = painted.max(axis=0) - painted.min(axis=0) + 1
            assert (extent <= 20).all()
    assert changed > 0
    assert np.asarray(image).max() == 0  # the input is left untouched
    assert Cutout(p=0.0)(image) is image


# ---------------------------------------------------------------- VOC

VOC_XML = """<annotation><folder>VOC{year}</folder><filename>{id}.jpg</filename>
<size><width>12</width><height>10</height><depth>3</depth></size>{objects}</annotation>"""
VOC_OBJECT = ("<object><name>{name}</name><pose>Left</pose><truncated>0</truncated>"
              "<difficult>{difficult}</difficult><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax>"
              "<ymax>5</ymax></bndbox></object>")


def make_voc(root, year, split, annotations, write_xml=True):
    """annotations: {image id: [(class, difficult), ...]} -> VOCdevkit/VOC<year> under root."""
    voc = root / "VOCdevkit" / f"VOC{year}"
    (voc / "ImageSets" / "Main").mkdir(parents=True)
    (voc / "Annotations").mkdir()
    (voc / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in annotations))
    for image_id, objects in annotations.items():
        write_image(voc / "JPEGImages" / f"{image_id}.jpg")
        if write_xml:
            body = "".join(VOC_OBJECT.format(name=n, difficult=int(d)) for n, d in objects)
            (voc / "Annotations" / f"{image_id}.xml").write_text(VOC_XML.format(year=year, id=image_id, objects=body))
    return voc


def test_voc_targets_and_difficult_rule(tmp_path):
    voc = make_voc(tmp_path, "2007", "trainval", {
        "000001": [("dog", False), ("cat", True), ("cat", True)],
        "000002": [("person", True), ("person", False), ("tvmonitor", False)],
    })
    for root in (tmp_path / "VOCdevkit", voc, tmp_path):
        ds = build_dataset("voc2007", root, "trainval")
        assert ds.classes == list(VOC_CLASSES) and len(VOC_CLASSES) == 20
        assert ds.ids == ["000001", "000002"] and ds.has_labels
    targets = ds.targets
    assert targets.shape == (2, 20) and targets.dtype == np.float32
    k = VOC_CLASSES.index
    assert targets[0, k("dog")] == 1 and targets[0, k("cat")] == -1 and targets[0].sum() == 0
    assert targets[1, k("person")] == 1 and targets[1, k("tvmonitor")] == 1 and targets[1].sum() == 2
    image, target = ds[0]
    assert image.shape == (3, 10, 12) and torch.equal(target, torch.from_numpy(targets[0]))


def test_voc_missing_annotation_and_split(tmp_path):
    voc = make_voc(tmp_path, "2007", "test", {"000003": [("dog", False)], "000004": [("cat", False)]})
    (voc / "Annotations" / "000004.xml").unlink()
    with pytest.raises(DatasetError, match="000004.xml"):
        build_dataset("voc2007", voc, "test")
    with pytest.raises(DatasetError, match="trainval.txt.*splits here: test"):
        build_dataset("voc2007", voc, "trainval")


def test_voc2012_test_split_without_labels(tmp_path):
    make_voc(tmp_path, "2012", "test", {"2008_000001": [], "2008_000002": []}, write_xml=False)
    ds = build_dataset("voc2012", tmp_path / "VOCdevkit", "test")
    assert not ds.has_labels and ds.ids == ["2008_000001", "2008_000002"]
    assert not ds.targets.any()


# ---------------------------------------------------------------- COCO


def test_coco_category_mapping_and_unlabelled_images(tmp_path, caplog):
    pytest.importorskip("pycocotools")
    categories = [{"id": 90, "name": "toothbrush", "supercategory": "indoor"},
                  {"id": 1, "name": "person", "supercategory": "person"},
                  {"id": 5, "name": "airplane", "supercategory": "vehicle"}]
    images = [{"id": i, "file_name": f"COCO_val2014_{i:012d}.jpg", "width": 12, "height": 10} for i in (7, 3, 11)]
    box = {"bbox": [1, 1, 4, 4], "area": 16, "segmentation": [[1, 1, 5, 1, 5, 5]]}
    annotations = [{"id": 1, "image_id": 7, "category_id": 90, "iscrowd": 0, **box},
                   {"id": 2, "image_id": 7, "category_id": 1, "iscrowd": 0, **box},
                   {"id": 3, "image_id": 3, "category_id": 5, "iscrowd": 1, **box}]
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_val2014.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    for image in images:
        write_image(tmp_path / "val2014" / image["file_name"])
    with caplog.at_level(logging.INFO):
        ds = build_dataset("coco2014", tmp_path, "val")
    assert ds.classes == ["person", "airplane", "toothbrush"] and ds.category_ids == [1, 5, 90]
    assert ds.ids == ["3", "7"] and ds.n_without_labels == 1 and "1 images without annotations" in caplog.text
    np.testing.assert_array_equal(ds.targets, [[0, 1, 0], [1, 0, 1]])
    assert ds[1][0].shape == (3, 10, 12)
    with pytest.raises(DatasetError, match="instances_train2014.json"):
        build_dataset("coco2014", tmp_path, "train")


# ---------------------------------------------------------------- folder


def make_folder(root, splits, classes=None):
    """splits: {split: [(image path, "a;b"), ...]}; writes the csvs and images."""
    root.mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        (root / f"{split}.csv").write_text("image,labels\n" + "".join(f"{i},{labels}\n" for i, labels in rows))
        for image, _ in rows:
            write_image(root / image)
    if classes is not None:
        (root / "classes.txt").write_text("\n".join(classes) + "\n")
    return root


def test_folder_classes_from_union_of_all_csvs(tmp_path):
    root = make_folder(tmp_path / "d", {"train": [("img/a.png", "cat;dog"), ("img/b.png", "")],
                                        "test": [("img/c.png", "bird")]})
    ds = build_dataset("folder", root, "train")
    assert ds.classes == ["bird", "cat", "dog"]
    np.testing.assert_array_equal(ds.targets, [[0, 1, 1], [0, 0, 0]])
    assert ds.ids == ["img/a.png", "img/b.png"]


def test_folder_classes_txt_order_and_errors(tmp_path):
    root = make_folder(tmp_path / "d", {"train": [("a.png", "dog"), ("b.png", "kat")]}, classes=["dog", "cat"])
    with pytest.raises(DatasetError) as info:
        build_dataset("folder", root, "train")
    assert str(info.value) == f"{root / 'train.csv'}:3: label 'kat' is not in classes.txt"

    (root / "train.csv").write_text("image,labels\nb.png,cat;dog\n")
    ds = build_dataset("folder", root, "train")
    assert ds.classes == ["dog", "cat"] and ds.targets.tolist() == [[1, 1]]

    (root / "train.csv").write_text("path;labels\na.png;dog\n")
    with pytest.raises(DatasetError, match=r"train.csv:1: header must be 'image,labels'"):
        build_dataset("folder", root, "train")
    with pytest.raises(DatasetError, match=r"val.csv: split file not found \(found: train.csv\)"):
        build_dataset("folder", root, "val")


def test_broken_images_are_skipped_with_one_warning(tmp_path, caplog):
    root = make_folder(tmp_path / "d", {"train": [("ok.png", "a"), ("bad.png", "b"), ("gone.png", "a;b")]})
    (root / "bad.png").write_bytes(b"\x89PNG garbage")
    (root / "gone.png").unlink()
    spec = {"image_size": 16, "interpolation": "bilinear", "resize": "squash", **IMAGENET}
    ds = build_dataset("folder", root, "train", build_transform(spec, train=False))
    with caplog.at_level(logging.WARNING):
        items = [ds[i] for i in range(3)] + [ds[1], ds[2]]
    assert items[0] is not None and items[1:] == [None] * 4
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and "bad.png" in warnings[0] and "gone.png" in warnings[1]

    images, targets, skipped = collate_skip_broken(items[:3])
    assert images.shape == (1, 3, 16, 16) and targets.tolist() == [[1.0, 0.0]] and skipped == 2
    images, targets, skipped = collate_skip_broken([None, None])
    assert images.shape[0] == 0 and targets.shape[0] == 0 and skipped == 2
    loader = torch.utils.data.DataLoader(ds, batch_size=3, collate_fn=collate_skip_broken)
    assert [n for _, _, n in loader] == [2]


def test_unknown_dataset_name():
    assert set(DATASETS) == {"voc2007", "voc2012", "coco2014", "folder", "digits"}
    with pytest.raises(DatasetError, match="unknown dataset 'imagenet'"):
        build_dataset("imagenet", "/nonexistent", "train")


# ---------------------------------------------------------------- digits

SMALL = {"n_train": 12, "n_test": 6, "canvas": 48}


def test_digits_deterministic_and_disjoint(tmp_path):
    first = build_digits_dataset(tmp_path / "a", seed=3, **SMALL)
    second = build_digits_dataset(tmp_path / "b", seed=3, **SMALL)
    other = build_digits_dataset(tmp_path / "c", seed=4, **SMALL)
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert len(files) == 12 + 6 + 4  # images, train/test csv, classes.txt, manifest.json
    for rel in files:
        assert (first / rel).read_bytes() == (second / rel).read_bytes(), rel
    assert (first / "train.csv").read_text() != (other / "train.csv").read_text()

    manifest = json.loads((first / "manifest.json").read_text())
    train_rows, test_rows = set(manifest["source_rows"]["train"]), set(manifest["source_rows"]["test"])
    assert train_rows and test_rows and not train_rows & test_rows
    assert (first / "classes.txt").read_text().split() == [str(d) for d in range(10)]

    ds = build_dataset("folder", first, "test")
    assert ds.classes == [str(d) for d in range(10)] and len(ds) == 6
    assert (ds.targets.sum(axis=1) >= 1).all()
    assert Image.open(ds.samples[0][0]).size == (48, 48)


def test_digits_cache_reuse_and_env(tmp_path, monkeypatch):
    monkeypatch.setenv("MLIC_EDGE_CACHE", str(tmp_path / "cache"))
    folder = build_digits_dataset(seed=0, **SMALL)
    assert folder.parent == tmp_path / "cache" / "digits"
    stamp = (folder / "manifest.json").stat().st_mtime_ns
    assert build_digits_dataset(seed=0, **SMALL) == folder
    assert (folder / "manifest.json").stat().st_mtime_ns == stamp  # reused, not rebuilt
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no staging left

    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, "format": "old"}))
    assert build_digits_dataset(seed=0, **SMALL) == folder  # an outdated set is rebuilt
    assert json.loads((folder / "manifest.json").read_text()) == manifest

    monkeypatch.setattr(datasets_module, "build_digits_dataset", functools.partial(build_digits_dataset, **SMALL))
    ds = build_dataset("digits", None, "train")
    assert len(ds) == 12 and ds.samples[0][0].is_relative_to(folder)


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_reduced_jpeg_decoding_is_pillows_draft_upright(tmp_path, orientation):
    """load_image(reduce_to=S) decodes a JPEG at the smallest DCT scale whose sides stay >= S:
    the pixels Pillow's own draft mode gives (simplejpeg where installed), EXIF rotation applied."""
    from PIL import ImageOps

    rng = np.random.default_rng(orientation)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "photo.jpg"
    Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)).save(path, quality=90, exif=exif)
    reduced = np.asarray(load_image(path, reduce_to=112))
    with Image.open(path) as image:
        image.draft("RGB", (112, 112))
        expected = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    assert expected.shape == ((120, 160, 3) if orientation in (1, 3) else (160, 120, 3))   # 1/4 scale
    np.testing.assert_array_equal(reduced, expected)
    assert np.asarray(load_image(path)).shape[:2] in ((480, 640), (640, 480))              # full size
