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

They are timed in turn, --repeats rounds after one untimed round; printed, and written to the
result file --out (every round's images/s, and per model the medians and the median of the rounds'
pipeline / bare ratios). Without --model, a randomly initialised model of the quickstart's
architecture (tf_efficientnet_lite0 @112, d_model 256; or --arch PRESET, repeatable) is exported to
ONNX first: speed does not depend on the weights. The images are real photos from
scikit-image, resized to --size and saved as JPEG (quality 90), like a camera's, or the first
--images files of --folder.
"""
from __future__ import annotations

import argparse
import inspect
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from result_files import new_result, result_dir, write_result

NAME = "infer_throughput"


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
    ckpt = folder / f"random_{arch}.pt"
    save_checkpoint(ckpt, {"model": model.state_dict(), "config": cfg.to_dict(),
                           "classes": [str(k) for k in range(10)], "preprocess": model.data_config(),
                           "thresholds": [0.5] * 10})
    return export_onnx(ckpt, folder / f"random_{arch}_fp32.onnx").path


def measure(model_path: Path, folder: Path, args, work_dir: Path) -> tuple[dict, list[dict]]:
    """--repeats rounds of bare backend, pipeline and decode in turn (after one untimed round)."""
    from mlic_edge.core.images import list_inputs
    from mlic_edge.core.preprocess import load_image, preprocess, preprocess_args
    from mlic_edge.runtime import open_backend
    from mlic_edge.runtime.infer import run_inference

    backend = open_backend(model_path, device="cpu")
    spec = backend.metadata.preprocess
    prep = preprocess_args(spec)
    paths = list_inputs(folder)
    reduced = {"reduce_to": prep[0]} if "reduce_to" in inspect.signature(load_image).parameters else {}

    def decode_all() -> np.ndarray:                      # as infer decodes: reduced-scale JPEG decoding
        return np.stack([preprocess(load_image(p, **reduced), *prep) for p in paths])  # (N, 3, S, S)

    def bare() -> None:
        for start in range(0, len(batch_input), args.batch):
            backend.predict(batch_input[start:start + args.batch])

    options = {} if args.workers is None else {"workers": args.workers}

    def pipeline() -> None:
        run_inference(folder, backend, work_dir / "preds.csv", batch_size=args.batch, progress=False, **options)

    batch_input = decode_all()
    rounds = []
    for round_ in range(args.repeats + 1):
        rates = {}
        for name, work in (("bare", bare), ("pipeline", pipeline), ("decode", decode_all)):
            start = time.perf_counter()
            work()
            rates[f"{name}_img_s"] = len(paths) / (time.perf_counter() - start)
        if round_:                                   # round 0 warms caches and ORT up
            rounds.append({"round": round_, **rates})
    backend.close()
    return {"images": len(paths), "image_size": spec["image_size"]}, rounds


def summarise(rounds: list[dict]) -> dict:
    """Medians over rounds; the ratio is the median of each round's pipeline / bare ratio, so
    that the machine's drift (other processes, clocks) cancels out of it."""
    summary = {f"median_{key}": statistics.median(r[key] for r in rounds)
               for key in ("bare_img_s", "pipeline_img_s", "decode_img_s")}
    summary["median_ratio"] = statistics.median(r["pipeline_img_s"] / r["bare_img_s"] for r in rounds)
    return summary


def print_case(case: dict, rounds: list[dict], summary: dict, args) -> None:
    print(f"model {case['model']}, {case['images']} {case['source']} -> {case['image_size']} px, "
          f"batch {args.batch}, median of {args.repeats}")
    for key, label in (("bare", "bare backend  "), ("pipeline", "infer pipeline"), ("decode", "decode alone  ")):
        runs = ", ".join(f"{r[f'{key}_img_s']:.1f}" for r in rounds)
        print(f"  {label} {summary[f'median_{key}_img_s']:8.1f} img/s   (runs: {runs})")
    print(f"  pipeline / bare = {summary['median_ratio']:.2f}   (median over rounds of each round's ratio)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="an .onnx/.engine/.pt file (default: the quickstart "
                                                   "architecture with random weights, exported here)")
    parser.add_argument("--arch", action="append", help="without --model: quickstart or a preset (lite0-224, ...); "
                                                        "repeat the flag for several (default: quickstart)")
    parser.add_argument("--folder", type=Path, help="tag these images (the first --images, sorted) instead of generated JPEGs")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--size", default="640x480", help="WIDTHxHEIGHT of the generated JPEGs")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--workers", type=int, default=None, help="infer's decode workers (default: its own)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=result_dir(NAME) / f"{NAME}.json", help="the result file")
    args = parser.parse_args()

    from mlic_edge.core.images import list_inputs

    width, height = (int(v) for v in args.size.lower().split("x"))
    archs = [None] if args.model else (args.arch or ["quickstart"])
    source = f"images of {args.folder}" if args.folder else f"JPEGs {width}x{height}"
    result = new_result(NAME, {"model": str(args.model) if args.model else None, "archs": archs,
                               "weights": "trained" if args.model else "random",
                               "folder": str(args.folder) if args.folder else None, "images": args.images,
                               "size": [width, height], "batch": args.batch, "workers": args.workers,
                               "repeats": args.repeats, "runtime": "onnxruntime cpu"})
    with tempfile.TemporaryDirectory(prefix="mlic-infer-bench-") as tmp:
        tmp = Path(tmp)
        folder = tmp / "images"
        folder.mkdir()
        if args.folder:
            for path in list_inputs(args.folder)[:args.images]:
                os.symlink(path.resolve(), folder / path.name)
        else:
            make_images(folder, args.images, (width, height))
        for arch in archs:
            model_path = args.model or random_model(tmp, arch)
            case, rounds = measure(model_path, folder, args, tmp)
            case.update(model=model_path.name if args.model else f"{arch} architecture (random weights)",
                        arch=arch, source=source)
            result["runs"] += [{**case, **r} for r in rounds]
            result["summary"].setdefault("cases", []).append({**case, **summarise(rounds)})
            print_case(case, rounds, summarise(rounds), args)
    result["summary"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]  # the machine is shared
    write_result(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
