"""Results people read as pictures: training curves and per-class AP bars (PNG, written atomically)."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

from .core.files import atomic_write_bytes


def _figure():
    import matplotlib
    matplotlib.use("Agg")  # files only; never open a window
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: str | Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())


def plot_curves(history: Sequence[dict], path: str | Path) -> None:
    """Loss, learning rate and mAP (model and EMA) per epoch."""
    plt = _figure()
    epochs = [r["epoch"] for r in history]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(epochs, [r["train_loss"] for r in history], marker="o")
    axes[0].set(title="training loss", xlabel="epoch")
    axes[1].plot(epochs, [r["lr"] for r in history], marker="o")
    axes[1].set(title="learning rate (end of epoch)", xlabel="epoch")
    for key, label in (("model_mAP", "model"), ("ema_mAP", "EMA")):
        if all(key in r for r in history):
            axes[2].plot(epochs, [r[key] for r in history], marker="o", label=label)
    axes[2].set(title="mAP (%) on the selection images", xlabel="epoch")   # best.pt is chosen on them
    if axes[2].get_legend_handles_labels()[0]:   # none without validation images
        axes[2].legend()
    for ax in axes:
        ax.grid(alpha=0.3)
    _save(fig, path)
    plt.close(fig)


def plot_per_class_ap(classes: Sequence[str], ap: Sequence[float], path: str | Path,
                      title: str = "per-class AP") -> None:
    plt = _figure()
    fig, ax = plt.subplots(figsize=(max(6.0, 0.32 * len(classes) + 2), 4))
    ax.bar(range(len(classes)), ap, color="tab:blue")
    ax.set_xticks(range(len(classes)), classes, rotation=70, ha="right", fontsize=8)
    ax.set(ylabel="AP (%)", ylim=(0, 100), title=title)
    ax.grid(axis="y", alpha=0.3)
    _save(fig, path)
    plt.close(fig)


def plot_deltas(rows: Sequence[dict], path: str | Path, title: str) -> None:
    """Variants against a base (benchmarks/seeded_variants.py rows): horizontal bars of each one's
    delta mAP, the seed spread as error bars; green / red where the delta exceeds the spread."""
    plt = _figure()
    shown = [r for r in rows if r["beyond_spread"] is not None]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(shown) + 1.2))
    colours = ["tab:green" if r["delta"] > 0 and r["beyond_spread"] else
               "tab:red" if r["beyond_spread"] else "tab:gray" for r in shown]
    ax.barh(range(len(shown)), [r["delta"] for r in shown], xerr=[r["margin"] for r in shown],
            color=colours, capsize=3)
    ax.set_yticks(range(len(shown)), [r["setting"] for r in shown])
    ax.invert_yaxis()
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set(xlabel="test mAP - base (points); bars: seed spread", title=title)
    ax.grid(axis="x", alpha=0.3)
    _save(fig, path)
    plt.close(fig)
