#!/usr/bin/env python3
"""The infer pipeline's images/s against the bare backend's, in one process, on the same model.

    python benchmarks/infer_throughput.py                       # quickstart architecture, 640x480 JPEGs
    python benchmarks/infer_throughput.py --arch lite0-224      # a model preset's architecture
    python benchmarks/infer_throughput.py --folder ~/.cache/mlic-edge/digits/test   # your images
    python benchmarks/infer_throughput.py --model runs/quickstart/model_fp32.onnx --size 1280x720

* bare backend: the images decoded and preprocessed once, untimed; then `backend.predict` on
  batches of --batch over all of them (what the model alone can do on this machine);
* pipeline: `run_inference(folder, backend, out=preds.csv, batch_size=--batch)`: listing, decoding,
  preprocessing, the same model calls, sigmoid, thresholds and the CSV rows;
* decode: decoding + preprocessing alone, one thread (what the pipeline has to hide).

They are timed in turn, --repeats rounds after one untimed round; printed (and written with
--json): the median images/s of each and the median of the rounds' pipeline / bare ratios. Without --model, a randomly initialised model of
the quickstart's architecture (tf_efficientnet_lite0 @112, d_model 256; or --arch PRESET) is
exported to ONNX first: speed does not depend on the weights. The images are real photos from
scikit-image, resized to --size and saved as JPEG (quality 90), like a camera's, or the first
--images files of --folder.
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def make_images(folder: Path, count: int, size: tuple[int, int]) -> list[Path]:
    """`count` JPEGs of size (width, height) cut from scikit-image's colour photos."""
    import skimage.data as photos
    from PIL import Image

    sources = [getattr(photos, name)() for name in ("astronaut", "coffee", "chelsea", "rocket", "motorcycle_left")
               if hasattr(photos, name)] or [photos.astronaut()]
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        source = Image.fromarray(sources[i % len(sources)])
        w, h = source.size
        crop = int(min(w, h) * rng.uniform(0.6, 1.0))
        x, y = rng.integers(0, w - crop + 1), rng.integers(0, h - crop + 1)
        image = source.crop((x, y, x + crop, y + crop)).resize(size, Image.Resampling.BICUBIC)
        path = folder / f"img_{i:05d}.jpg"
        image.save(path, quality=90)
        paths.append(path)
    return paths


def random_model(folder: Path, arch: str = "quickstart") -> Path:
    """A random-weight model of the quickstart's architecture or a preset's, exported to ONNX fp32."""
    import torch

    from mlic_edge.checkpoint import save_checkpoint
    from mlic_edge.config import Recipe
    from mlic_edge.export import export_onnx
    from mlic_edge.model import build_model
    from mlic_edge.model.presets import get_preset

    cfg = Recipe.load("quickstart").model             # mlic_edge/configs/quickstart.yaml
    if arch != "quickstart":
        cfg = cfg.replace(**get_preset(arch).model)
    cfg = cfg.replace(pretrained="none", num_classes=10)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    ckpt = folder / "random.pt"
    save_checkpoint(ckpt, {"model": model.state_dict(), "config": cfg.to_dict(),
                           "classes": [str(k) for k in range(10)], "preprocess": model.data_config(),
                           "thresholds": [0.5] * 10})
    return export_onnx(ckpt, folder / "random_fp32.onnx").path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="an .onnx/.engine/.pt file (default: the quickstart "
                                                   "architecture with random weights, exported here)")
    parser.add_argument("--arch", default="quickstart", help="without --model: quickstart or a preset (lite0-224, ...)")
    parser.add_argument("--folder", type=Path, help="tag these images (the first --images, sorted) instead of generated JPEGs")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--size", default="640x480", help="WIDTHxHEIGHT of the generated JPEGs")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--workers", type=int, default=None, help="infer's decode workers (default: its own)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from mlic_edge.core.images import list_inputs
    from mlic_edge.core.preprocess import load_image, preprocess, preprocess_args
    from mlic_edge.runtime import open_backend
    from mlic_edge.runtime.infer import run_inference

    width, height = (int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory(prefix="mlic-infer-bench-") as tmp:
        tmp = Path(tmp)
        model_path = args.model or random_model(tmp, args.arch)
        folder = tmp / "images"
        if args.folder:
            folder.mkdir()
            for source in list_inputs(args.folder)[:args.images]:
                os.symlink(source.resolve(), folder / source.name)
        else:
            make_images(folder, args.images, (width, height))
        backend = open_backend(model_path, device="cpu")
        spec = backend.metadata.preprocess
        prep = preprocess_args(spec)
        paths = list_inputs(folder)

        reduced = {"reduce_to": prep[0]} if "reduce_to" in inspect.signature(load_image).parameters else {}

        def decode_all() -> np.ndarray:                      # as infer decodes (older versions: in full)
            return np.stack([preprocess(load_image(p, **reduced), *prep) for p in paths])  # (N, 3, S, S)

        def bare() -> None:
            for start in range(0, len(batch_input), args.batch):
                backend.predict(batch_input[start:start + args.batch])

        options = {} if args.workers is None else {"workers": args.workers}

        def pipeline() -> None:
            run_inference(folder, backend, tmp / "preds.csv", batch_size=args.batch, progress=False, **options)

        batch_input = decode_all()
        rates: dict[str, list[float]] = {"bare": [], "pipeline": [], "decode": []}
        for round_ in range(args.repeats + 1):
            for name, work in (("bare", bare), ("pipeline", pipeline), ("decode", decode_all)):
                start = time.perf_counter()
                work()
                if round_:                                   # round 0 warms caches and ORT up
                    rates[name].append(len(paths) / (time.perf_counter() - start))
        backend.close()

    median = {name: statistics.median(values) for name, values in rates.items()}
    # Each round's pipeline run against the bare run just before it: the machine's drift (other
    # processes, clocks) cancels out of the ratio, which is the median of these.
    ratio = statistics.median(p / b for p, b in zip(rates["pipeline"], rates["bare"]))
    images = f"{len(paths)} images of {args.folder}" if args.folder else f"{len(paths)} JPEGs {width}x{height}"
    print(f"model {model_path.name if args.model else f'{args.arch} architecture (random weights)'}, "
          f"{images} -> {spec['image_size']} px, batch {args.batch}, median of {args.repeats}")
    print(f"  bare backend   {median['bare']:8.1f} img/s   (runs: {', '.join(f'{r:.1f}' for r in rates['bare'])})")
    print(f"  infer pipeline {median['pipeline']:8.1f} img/s   (runs: {', '.join(f'{r:.1f}' for r in rates['pipeline'])})")
    print(f"  decode alone   {median['decode']:8.1f} img/s   (one thread)")
    print(f"  pipeline / bare = {ratio:.2f}   (median over rounds of each round's ratio)")
    if args.json:
        args.json.write_text(json.dumps({"model": str(args.model or f"{args.arch}-random"), "images": len(paths),
                                         "size": [width, height], "batch": args.batch, "rates": rates,
                                         "median": median, "ratio": ratio}, indent=2) + "\n")


if __name__ == "__main__":
    main()
