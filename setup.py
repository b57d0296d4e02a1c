"""Package layout that pyproject.toml cannot say: the shipped data folders.

The dataset mappings (``datasets/``) and the named recipes (``recipes/``) are kept at the
repository's top level, where users and docs point at them, and ship inside the wheel as the
package-data folders ``rec_eraser/datasets`` and ``rec_eraser/recipes``, so that a plain
``pip install .`` works from any folder. ``[tool.setuptools.packages.find]`` cannot add a
package that lives outside ``rec_eraser/``, hence this file; everything else is in
pyproject.toml. ``rec_eraser.shipped`` finds the files in either layout.
"""

from setuptools import find_packages, setup

SHIPPED = ("datasets", "recipes")

setup(
    packages=find_packages(include=["rec_eraser", "rec_eraser.*"]) + [f"rec_eraser.{name}" for name in SHIPPED],
    package_dir={f"rec_eraser.{name}": name for name in SHIPPED},
    package_data={f"rec_eraser.{name}": ["*.toml"] for name in SHIPPED},
)
