"""Files that ship with rec-eraser: the datasets' field mappings and the named recipes.

Their sources are the repository's top-level ``datasets/`` and ``recipes/`` folders. A wheel
(``pip install .``) carries them as package data, in the folders ``rec_eraser/datasets`` and
``rec_eraser/recipes`` (``setup.py`` maps the top-level folders there). An editable install or
a plain checkout has no such folders inside the package, because setuptools' editable finder
maps the top-level package only, so there they are read from the checkout itself. Both cases
resolve here, so nothing else needs to know how rec-eraser was installed.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Literal

ShippedKind = Literal["datasets", "recipes"]


def shipped_dir(kind: ShippedKind) -> Path:
    """The folder holding the shipped ``kind`` files (``datasets`` or ``recipes``)."""
    if kind not in ("datasets", "recipes"):
        raise ValueError(f"unknown kind of shipped files {kind!r}; choose 'datasets' or 'recipes'")
    spec = importlib.util.find_spec(f"rec_eraser.{kind}")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    checkout = Path(__file__).resolve().parent.parent
    if not (checkout / "pyproject.toml").is_file():  # installed, yet without its data: not a folder to guess
        raise FileNotFoundError(
            f"rec-eraser's shipped {kind} are missing from its installation ({checkout}); reinstall it"
        )
    return checkout / kind


def shipped_names(kind: ShippedKind) -> list[str]:
    """The names (file stems) of the shipped ``kind`` files, sorted."""
    return sorted(path.stem for path in shipped_dir(kind).glob("*.toml"))
