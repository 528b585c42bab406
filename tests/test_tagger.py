"""The Python API (`mlic_edge.load` -> Tagger): mixed inputs, per-input errors, thresholds, the
same tags as the checkpoint in PyTorch, lazy imports, and video through `stream`."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from torchless import TORCH_BLOCKER

import mlic_edge

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def images(trained) -> list[Path]:
    return sorted((trained["data_root"] / "test").glob("*.png"))[:12]


def test_import_mlic_edge_loads_no_runtime():
    code = ("import sys, mlic_edge; heavy = [m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'onnxruntime', 'numpy', 'PIL', 'av', 'tensorrt', 'tensorrt_rtx')]; "
            "assert not heavy, heavy; assert callable(mlic_edge.load)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_predict_takes_paths_pil_images_and_arrays_in_order(trained, images, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    photo = Image.open(images[1])
    inputs = [str(images[0]), photo, np.asarray(photo.convert("RGB")), broken, np.zeros((4, 4), np.float32),
              images[2]]
    with mlic_edge.load(trained["fp32"], device="cpu", batch_size=4) as tagger:
        preds = tagger.predict(inputs)
        assert [p.source for p in preds] == [str(images[0]), "<image 1>", "<array 2>", str(broken),
                                             "<array 4>", str(images[2])]
        assert [p.ok for p in preds] == [True, True, True, False, False, True]
        assert "cannot decode image" in preds[3].error and str(broken) in preds[3].error
        assert "uint8" in preds[4].error and preds[4].labels == [] and preds[4].scores == {}
        # the same picture as a path, a PIL image and an array: the same scores
        alone = tagger.predict(images[1])[0]
        for pred in preds[1:3]:
            assert pred.scores == pytest.approx(alone.scores, abs=1e-6)
        assert tagger.classes == list(preds[0].scores)
        assert tagger.metadata.classes == tagger.classes and len(tagger.thresholds) == len(tagger.classes)
    with pytest.raises(mlic_edge.runtime.tagger.ConfigError, match="closed"):
        tagger.predict(images[0])


def test_labels_follow_the_per_class_thresholds_and_the_override(trained, images):
    with mlic_edge.load(trained["fp32"], device="cpu") as tagger:
        # as if stored in the model
        tagger.model = dataclasses.replace(tagger.model, thresholds=np.array([0.1, 0.3, 0.5, 0.7, 0.9, 0.99]))
        for pred in tagger.predict(images):
            expected = [c for c, t in zip(tagger.classes, tagger.thresholds) if pred.scores[c] >= t]
            assert pred.labels == expected
        for pred in tagger.predict(images, threshold=0.0):
            assert pred.labels == tagger.classes
        with pytest.raises(mlic_edge.runtime.tagger.ConfigError, match=r"\[0, 1\]"):
            tagger.predict(images, threshold=1.5)


def test_onnx_tagger_matches_the_checkpoint_in_pytorch(trained, images):
    """The scores are the sigmoid of the checkpoint's own logits (an independent path: torch)."""
    import torch

    from mlic_edge.checkpoint import load_model
    from mlic_edge.data.transforms import build_transform

    model, ckpt = load_model(trained["ckpt"], torch.device("cpu"))
    transform = build_transform(ckpt["preprocess"], train=False)
    with torch.no_grad():
        batch = torch.stack([transform(Image.open(p).convert("RGB")) for p in images])
        expected = torch.sigmoid(model(batch)).numpy()                                  # (N, K)
    with mlic_edge.load(trained["fp32"], device="cpu", batch_size=5) as tagger:
        got = np.array([[p.scores[c] for c in tagger.classes] for p in tagger.predict(images)])
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_tagger_runs_without_torch(trained, images):
    code = TORCH_BLOCKER + textwrap.dedent(f"""
        import mlic_edge
        with mlic_edge.load({str(trained['fp32'])!r}, device="cpu") as tagger:
            preds = tagger.predict([{str(images[0])!r}, {str(images[1])!r}])
        assert all(p.ok and len(p.scores) == 6 for p in preds), preds
        assert not any(m.split('.')[0] in ('torch', 'timm') for m in sys.modules)
    """)
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_iter_predict_consumes_a_generator_lazily(trained, images):
    taken = []

    def inputs():
        for i in range(1000):
            taken.append(i)
            yield images[i % len(images)]

    with mlic_edge.load(trained["fp32"], device="cpu", batch_size=4) as tagger:
        stream = tagger.iter_predict(inputs())
        first = [next(stream) for _ in range(4)]
        stream.close()
    assert all(p.ok for p in first)
    # the decode window (3 batches), the batch the model runs ahead and the one being read:
    # a few batches, not the 1000 inputs
    assert len(taken) <= 4 * 3 + 2 * 4


def test_stream_tags_video_frames_like_their_images(trained, tmp_path):
    from mlic_edge.runtime.video import write_slideshow

    names = ["0000.png", "0002.png", "0005.png"]
    pictures = [np.asarray(Image.open(trained["data_root"] / "test" / n).convert("RGB")) for n in names]
    clip = tmp_path / "clip.mkv"
    write_slideshow(pictures, clip, seconds_per_image=1.0, fps=10, lossless=True)
    with mlic_edge.load(trained["fp32"], device="cpu", batch_size=4) as tagger:
        reference = tagger.predict(pictures)
        frames = list(tagger.stream(clip, every=3))
    assert [f.frame for f in frames] == list(range(0, 30, 3))
    assert [f.time_s for f in frames] == pytest.approx([i / 10 for i in range(0, 30, 3)])
    for f in frames:
        image = reference[int(f.frame // 10)]
        assert f.source == str(clip) and f.labels == image.labels
        assert max(abs(f.scores[c] - image.scores[c]) for c in image.scores) < 0.03
