"""Where a run's recipe comes from, decided in one place (the CLI and `mlic_edge.train` call it):

* a recipe file or a shipped recipe by name (`config`): used as it is; a preset then only
  replaces its model section;
* no recipe and own data (`data="folder"`) or a preset: derived from the preset (default
  lite0-224) and the data set's size (train/auto_recipe.py), with `notes` saying why each value;
* neither: the defaults (the built-in digits set);

then the values the caller set (keyword options and `section.key=value` items) win. No torch here.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..config import ModelConfig, Recipe, TrainConfig, parse_override

# The keyword options of `resolve_recipe` / `mlic_edge.train`: any model or train field by its name
# (the two sections share no field name).
OPTION_FIELDS: dict[str, str] = {**{f.name: f"model.{f.name}" for f in fields(ModelConfig)},
                                 **{f.name: f"train.{f.name}" for f in fields(TrainConfig)}}


@dataclass
class ResolvedRecipe:
    """The recipe a run trains with; `notes`: how it was derived (empty when it was not), printed
    and written at the top of the run's recipe.yaml; `user_set`: {"section.key": value} the caller set."""
    recipe: Recipe
    notes: str = ""
    user_set: dict[str, Any] = field(default_factory=dict)


def user_values(options: dict[str, Any], set_items: Iterable[str] = ()) -> dict[str, Any]:
    """{"section.key": value} the caller set: the keyword options given (not None; names from
    OPTION_FIELDS), then `section.key=value` items (later ones win), each checked against its
    field's type."""
    unknown = sorted(set(options) - set(OPTION_FIELDS))
    if unknown:
        raise TypeError(f"unknown option(s) {', '.join(unknown)}; expected some of {', '.join(OPTION_FIELDS)}")
    values = {OPTION_FIELDS[k]: v for k, v in options.items() if v is not None}
    values.update(dict(parse_override(item) for item in set_items))
    return values


def _base_recipe(config: str | Path | None, data: str | None, data_root: str | Path | None,
                 workers: int | None) -> Recipe:
    """The recipe file's (or the defaults), with the data options; own data without a recipe
    file trains on that data set's usual splits."""
    recipe = Recipe.load(config) if config is not None else Recipe()
    data_values = {"data.name": data, "data.root": str(data_root) if data_root else None, "data.workers": workers}
    recipe = recipe.with_values({k: v for k, v in data_values.items() if v is not None})
    if data is not None and config is None:
        from ..data.registry import default_splits
        recipe = recipe.with_splits(*default_splits(data))
    return recipe


def derives_from_preset(config, preset: str | None, recipe: Recipe, resume: bool) -> bool:
    """A preset given, or own data without a recipe file (a resumed run keeps its own recipe)."""
    return not resume and (preset is not None or (config is None and recipe.data.name == "folder"))


def resolve_recipe(config: str | Path | None = None, *, data: str | None = None,
                   data_root: str | Path | None = None, preset: str | None = None,
                   workers: int | None = None, set_items: Iterable[str] = (), resume: bool = False,
                   **options: Any) -> ResolvedRecipe:
    """The recipe of a run (the rule in the module docstring). `config`: a recipe file or a shipped
    recipe's name (`config.recipe_path`); `options`: the CLI's options by name (OPTION_FIELDS:
    epochs, image_size, device, ...); `set_items`: "section.key=value" strings (--set).
    Raises ConfigError (one line) for a bad value, an unknown name or file."""
    given = user_values(options, list(set_items))
    recipe = _base_recipe(config, data, data_root, workers)
    notes = ""
    if derives_from_preset(config, preset, recipe, resume):
        from ..model.presets import DEFAULT_PRESET, get_preset
        chosen = get_preset(preset or DEFAULT_PRESET)
        if config is None:
            from .auto_recipe import derive_for_dataset
            # what the user set is used as set; what follows from it is derived from the final values
            derived = derive_for_dataset(recipe, chosen, given=given)
            recipe, notes = derived.recipe, derived.describe()
        else:
            recipe = recipe.with_values({f"model.{k}": v for k, v in chosen.model.items()})
    return ResolvedRecipe(recipe.with_values(given), notes, given)
