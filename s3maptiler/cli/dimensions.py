"""The ``--dimension`` option of ``seed`` and ``purge``: which values of a layer's
dimensions (TIME, ELEVATION, ...) a command works on.

``--dimension time=2024-03-01`` one value, ``--dimension time=2024-01-01/2024-03-01``
every declared value in that inclusive range; repeat the option for other dimensions
(their combinations are taken; a dimension not named stays at its default). Without
the option: the layer's dimension-less keys, as TMS and XYZ clients ask for them.
"""

from __future__ import annotations

from collections.abc import Sequence

import click

from s3maptiler.cli import errors
from s3maptiler.config import Layer
from s3maptiler.tiles.dimensions import DimensionError, select_values

option = click.option(
    "--dimension",
    "dimensions",
    multiple=True,
    metavar="NAME=VALUE|NAME=START/END",
    help="Dimension value or inclusive range (repeatable); unset: the dimension-less keys.",
)


def chosen(layer: Layer, specs: Sequence[str]) -> list[tuple[tuple[str, str], ...]]:
    """The (name, value) pairs of every combination the specs select; ``[()]`` for none."""
    try:
        combinations = select_values(layer.dimensions, specs)
    except DimensionError as err:
        raise errors.ConfigProblem(f"--dimension: layer {layer.name}: {err}") from None
    names = [d.name for d in layer.dimensions]
    return [tuple(zip(names, values, strict=False)) for values in combinations]


def describe(combinations: Sequence[tuple[tuple[str, str], ...]]) -> str:
    """`` time=2024-01-01..2024-03-01 (3 values)`` for a summary line; "" for none."""
    if combinations == [()]:
        return ""
    first = ",".join(f"{name}={value}" for name, value in combinations[0])
    if len(combinations) == 1:
        return f" {first}"
    last = ",".join(value for _, value in combinations[-1])
    return f" {first}..{last} ({len(combinations)} values)"
