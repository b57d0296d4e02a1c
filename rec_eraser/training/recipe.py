"""Training recipes: a TOML file with every setting of a training run.

A recipe is named by its path, or by the name of a recipe that ships with rec-eraser (the
repository's ``recipes/`` folder, e.g. ``demo-tallrec``): see :func:`find_recipe`.

A recipe may start with ``extends = "NAME"``: it then holds the settings of recipe ``NAME`` (a
shipped name, or a path relative to the extending file), section by section, with its own
lines overriding them (a list replaces a list). The benchmark recipes extend
``base-ml100k-<task>``, which extends ``base-ml100k``, so a shared setting is written once.
"""

from __future__ import annotations

import tomllib
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from rec_eraser.errors import RecEraserError
from rec_eraser.shipped import shipped_dir, shipped_names

T = TypeVar("T")

SCHEDULES = ("constant", "cosine")
PRECISIONS = ("float32", "bfloat16")
PROJECTOR_INITS = ("scaled", "default")


class RecipeError(RecEraserError, ValueError):
    """A recipe file is missing, malformed or has an unknown or invalid setting."""


@dataclass(frozen=True)
class Recipe:
    """How an adapter is trained. Sections of the TOML file: ``[lora]``, ``[train]``, ``[model]``."""

    # [lora]
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    # [train]
    lr: float = 1e-3
    projector_lr: float | None = None  # the item projector's learning rate; None = lr
    epochs: int = 1
    batch_size: int = 8
    seed: int = 0
    max_train: int | None = None  # a seeded sub-sample of the training instances
    # users of that sub-sample kept out of training (seeded): never-trained users drawn exactly
    # like trained ones, the reference a deleted user's instances are calibrated against
    holdout_users: int = 0
    max_length: int = 512
    schedule: str = "constant"  # the learning rate over the steps: "constant" or "cosine" (decays to 0)
    warmup: float = 0.0  # the fraction of the steps over which the learning rate rises linearly from 0
    precision: str = "float32"  # "bfloat16": matrix products in bfloat16 under autocast (weights stay float32)
    # batches of similar lengths within windows of an epoch's random order (training.batching): less padding
    length_bucketing: bool = False
    # [model]
    base_model: str | None = None  # a local Hugging Face folder; None = the embedded SmolLM2
    item_tokens: bool = True  # LLaRA: item-embedding tokens through a trainable projector
    sasrec_epochs: int = 20
    # the item projector's start: "scaled" (ItemProjector.scale_to: distinct items at a token's
    # norm) or "default" (PyTorch's nn.Linear initialisation, the start before "scaled")
    projector_init: str = "scaled"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_types(self, "recipe", SECTION_OF)
        for name in ("rank", "alpha", "epochs", "batch_size", "max_length"):
            if getattr(self, name) < 1:
                raise RecipeError(f"recipe: {_at(name)} must be >= 1, got {getattr(self, name)}")
        for name in ("lr", "projector_lr"):
            value = getattr(self, name)
            if value is not None and not 0 < value < 1:
                raise RecipeError(f"recipe: {_at(name)} must be in (0, 1), got {value}")
        if self.schedule not in SCHEDULES:
            raise RecipeError(f"recipe: [train] schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.precision not in PRECISIONS:
            raise RecipeError(
                f"recipe: [train] precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            )
        if self.projector_init not in PROJECTOR_INITS:
            raise RecipeError(
                f"recipe: [model] projector_init must be one of {', '.join(PROJECTOR_INITS)}, got {self.projector_init!r}"
            )
        if not 0 <= self.warmup < 1:
            raise RecipeError(f"recipe: [train] warmup must be in [0, 1) (a fraction of the steps), got {self.warmup}")
        if self.max_train is not None and self.max_train < 1:
            raise RecipeError(f"recipe: [train] max_train must be >= 1, got {self.max_train}")
        if self.holdout_users < 0:
            raise RecipeError(f"recipe: [train] holdout_users must be >= 0, got {self.holdout_users}")
        if not 0 <= self.dropout < 1:
            raise RecipeError(f"recipe: [lora] dropout must be in [0, 1), got {self.dropout}")
        if self.seed < 0:
            raise RecipeError(f"recipe: [train] seed must be >= 0, got {self.seed}")
        if self.max_length < MIN_LENGTH:
            raise RecipeError(
                f"recipe: [train] max_length must be >= {MIN_LENGTH} tokens (a prompt's oldest tokens are cut to fit it), "
                f"got {self.max_length}"
            )
        if not self.target_modules:
            raise RecipeError('recipe: [lora] target_modules must name at least one module, e.g. ["q_proj", "v_proj"]')
        if self.sasrec_epochs < 1:
            raise RecipeError(f"recipe: [model] sasrec_epochs must be >= 1, got {self.sasrec_epochs}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["target_modules"] = list(self.target_modules)
        for name in _KEYED_ONLY_WHEN_SET:
            if d[name] == _DEFAULTS[name]:
                # a setting added after adapters were trained and keyed by this dict: at its
                # default it is left out, so those adapters' keys (checkpoints, cached
                # benchmark adapters) still match the recipes that trained them
                del d[name]
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        return settings_from_dict(cls, data, "recipe: unknown setting", tuples=("target_modules",))


#: settings added after trained adapters were keyed by ``Recipe.to_dict()`` (see there)
_KEYED_ONLY_WHEN_SET = ("length_bucketing",)
_DEFAULTS = {f.name: f.default for f in fields(Recipe)}


def _at(name: str) -> str:
    """A recipe setting as a reader finds it in the file: ``[lora] rank``."""
    return f"[{SECTION_OF[name]}] {name}"


#: the shortest max_length a recipe may ask for: room for a response and some of its prompt
MIN_LENGTH = 32


def _fits(value: Any, hint: Any) -> bool:
    """Whether ``value`` has the type ``hint`` names (the hints of a settings dataclass: int,
    float, str, bool, None, unions of them, ``tuple[str, ...]``, ``dict[str, Any]``, ``Any``)."""
    if hint is Any:
        return True
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:  # an integer is a float here (lr = 1 is a typo, not a type error: the range check says so)
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin is tuple:
        return isinstance(value, tuple) and all(_fits(v, args[0]) for v in value)
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    return isinstance(value, hint)


def _describe(hint: Any) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false", type(None): "absent"}
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(hint))
    if typing.get_origin(hint) is tuple:
        plural = {int: "integers", float: "numbers", str: "strings", bool: "booleans"}
        return f"a list of {plural.get(typing.get_args(hint)[0], 'values')}"
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def check_types(settings: Any, what: str, sections: dict[str, str] | None = None) -> None:
    """Refuse a setting of a frozen settings dataclass whose value has the wrong type (a TOML
    ``rank = 2.5``, ``epochs = true``, ``batch_size = 8.0``) with one :class:`RecipeError` line
    naming the setting (and its section, from ``sections``: setting -> section)."""
    hints = typing.get_type_hints(type(settings))
    for f in fields(settings):
        value = getattr(settings, f.name)
        if not _fits(value, hints[f.name]):
            where = f"[{sections[f.name]}] " if sections and f.name in sections else ""
            raise RecipeError(f"{what}: {where}{f.name} must be {_describe(hints[f.name])}, got {value!r}")


def settings_from_dict(cls: type[T], data: dict[str, Any], unknown_message: str, tuples: tuple[str, ...] = ()) -> T:
    """``cls(**data)`` for a frozen settings dataclass: unknown names are refused with
    ``unknown_message``, and the fields named in ``tuples`` (TOML arrays) become tuples."""
    unknown = sorted(set(data) - {f.name for f in fields(cls)})
    if unknown:
        raise RecipeError(f"{unknown_message} {unknown[0]!r}")
    for name in tuples:
        if name in data and not isinstance(data[name], (list, tuple)):  # tuple("q_proj") would be its characters
            raise RecipeError(f"{unknown_message.split(':')[0]}: {name} must be a list, got {data[name]!r}")
    values = {k: tuple(v) if k in tuples else v for k, v in data.items()}
    return cls(**values)


#: each section of a recipe file and the settings it holds: a setting in another section than
#: its own is refused, so that a misplaced line is an error rather than silently obeyed
SECTION_SETTINGS: dict[str, tuple[str, ...]] = {
    "lora": ("rank", "alpha", "dropout", "target_modules"),
    "train": (
        "lr",
        "projector_lr",
        "epochs",
        "batch_size",
        "seed",
        "max_train",
        "holdout_users",
        "max_length",
        "schedule",
        "warmup",
        "precision",
        "length_bucketing",
    ),
    "model": ("base_model", "item_tokens", "sasrec_epochs", "projector_init"),
}
SECTIONS = tuple(SECTION_SETTINGS)
#: each recipe setting's section
SECTION_OF = {name: section for section, names in SECTION_SETTINGS.items() for name in names}


def find_recipe(path_or_name: Path | str) -> Path:
    """The recipe file that ``path_or_name`` names: an existing file, else a shipped recipe's
    name (``demo-tallrec`` or ``demo-tallrec.toml``; a bare name, no folder)."""
    path = Path(path_or_name)
    if path.is_file():
        return path
    if path.parent == Path(".") and path.name:
        shipped = shipped_dir("recipes") / (path.name if path.suffix == ".toml" else f"{path.name}.toml")
        if shipped.is_file():
            return shipped
    raise RecipeError(
        f"{path_or_name}: no such recipe file, nor a shipped recipe of that name "
        f"(shipped: {', '.join(shipped_names('recipes')) or 'none'})"
    )


def load_recipe(path_or_name: Path | str) -> Recipe:
    """Read a recipe TOML file, named by path or as a shipped recipe (sections ``[lora]``,
    ``[train]``, ``[model]``, all optional)."""
    path = find_recipe(path_or_name)
    return recipe_from_sections(read_toml(path), str(path))


def read_toml(path: Path) -> dict[str, Any]:
    """A recipe file's sections, with the recipes it ``extends`` merged in (see the module).

    A missing or malformed file, an ``extends`` that names no recipe, or a cycle of them, is a
    :class:`RecipeError` naming the file.
    """
    return _read_extended(path, ())


def _read_toml_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise RecipeError(f"{path}: no such recipe file")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise RecipeError(f"{path}: not valid TOML: {exc}") from exc


def _read_extended(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    here = path.resolve()
    if here in chain:
        raise RecipeError(f"{path}: `extends` forms a cycle ({' -> '.join(p.name for p in (*chain, here))})")
    raw = _read_toml_file(path)
    base_name = raw.pop("extends", None)
    if base_name is None:
        return raw
    if not isinstance(base_name, str) or not base_name:
        raise RecipeError(f'{path}: extends must name one recipe, e.g. extends = "base-ml100k"')
    relative = path.parent / base_name
    with_suffix = path.parent / (base_name if base_name.endswith(".toml") else f"{base_name}.toml")
    base_path = relative if relative.is_file() else (with_suffix if with_suffix.is_file() else None)
    try:
        base = _read_extended(base_path or find_recipe(base_name), (*chain, here))
    except RecipeError as exc:
        raise RecipeError(f"{path}: extends {base_name!r}: {exc}") from None
    merged = dict(base)
    for section, values in raw.items():
        if isinstance(values, dict) and isinstance(merged.get(section), dict):
            merged[section] = {**merged[section], **values}
        else:
            merged[section] = values
    return merged


def recipe_from_sections(raw: dict[str, Any], source: str, overrides: dict[str, Any] | None = None) -> Recipe:
    """A recipe from parsed sections ``[lora]``, ``[train]``, ``[model]`` (others are refused),
    with ``overrides`` (flat setting names) applied last."""
    flat: dict[str, Any] = {}
    for section, values in raw.items():
        if section not in SECTIONS or not isinstance(values, dict):
            raise RecipeError(f"{source}: unknown section [{section}] (known: {', '.join(SECTIONS)})")
        for name in values:
            if name in SECTION_OF and SECTION_OF[name] != section:
                raise RecipeError(f"{source}: {name} belongs in [{SECTION_OF[name]}], not [{section}]")
            if name not in SECTION_OF:
                raise RecipeError(
                    f"{source}: unknown setting {name!r} in [{section}] (its settings: {', '.join(SECTION_SETTINGS[section])})"
                )
        flat.update(values)
    flat.update(overrides or {})
    try:
        return Recipe.from_dict(flat)
    except (TypeError, RecipeError) as exc:
        raise RecipeError(f"{source}: {exc}") from exc
