"""The cost table of ``seed --dry-run`` and ``export --dry-run``, and its price options
(defaults: S3 Standard list prices in us-east-1; :mod:`s3maptiler.seeding.cost`)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

from s3maptiler.cli import common
from s3maptiler.seeding.cost import GB, Plan, Prices

_DEFAULTS = Prices()


def price_options(command: Callable) -> Callable:
    """``--price-put``, ``--price-get`` and ``--price-storage``, handed to the command
    as one ``prices`` argument."""

    @functools.wraps(command)
    def run(*args: Any, price_put: float, price_get: float, price_storage: float, **kw: Any):
        return command(*args, prices=Prices(price_put, price_get, price_storage), **kw)

    options = [
        ("--price-storage", _DEFAULTS.storage_gb_month, "Dollars per GB-month stored (dry run)."),
        ("--price-get", _DEFAULTS.get_per_1000, "Dollars per 1,000 S3 GETs (dry run)."),
        ("--price-put", _DEFAULTS.put_per_1000, "Dollars per 1,000 S3 PUTs (dry run)."),
    ]
    for name, default, text in options:
        run = click.option(
            name, type=click.FloatRange(0), default=default, show_default=True, help=text
        )(run)
    return run


def _bytes(value: float | None) -> str:
    return "unknown" if value is None else common.size_text(round(value))


def print_costs(plan: Plan, prices: Prices, note: str = "") -> None:
    """The table per zoom, the totals and the cost lines."""
    click.echo(
        f"{'zoom':>4}  {'tiles':>9}  {'metatiles':>9}  {'GetMaps':>9}  {'S3 PUTs':>9}  "
        f"{'S3 GETs':>9}  expected bytes (sampled at zoom)"
    )
    for z in plan.zooms:
        sampled = "" if z.sampled_zoom is None else f" (z{z.sampled_zoom})"
        click.echo(
            f"{z.z:>4}  {z.tiles:>9}  {z.metatiles:>9}  {z.getmaps:>9}  {z.puts:>9}  "
            f"{z.gets:>9}  {_bytes(z.expected_bytes)}{sampled}"
        )
    names = ("tiles", "metatiles", "getmaps", "puts", "gets")
    totals = "  ".join(f"{plan.total(n):>9}" for n in names)
    click.echo(f"total {totals}  {_bytes(plan.expected_bytes)}")
    if plan.extra_puts:
        click.echo(f"  and {plan.extra_puts} PUT requests to upload the archive")
    puts, gets = plan.request_cost(prices)
    stored = plan.expected_bytes
    storage = "unknown (no tile stored nearby to sample)"
    if stored is not None:
        storage = f"${stored / GB * prices.storage_gb_month:,.4f} per month"
    click.echo(
        f"cost at ${prices.put_per_1000:g} per 1,000 PUTs, ${prices.get_per_1000:g} per "
        f"1,000 GETs, ${prices.storage_gb_month:g} per GB-month (defaults: S3 Standard list "
        "prices in us-east-1; change them with --price-put, --price-get, --price-storage):"
    )
    click.echo(f"  PUT requests   ${puts:,.4f}")
    click.echo(f"  GET requests   ${gets:,.4f}")
    click.echo(f"  storage        {storage}")
    if note:
        click.echo(note)
