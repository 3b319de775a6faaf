"""Configuration: one model of the settings (:mod:`~s3maptiler.config.model`), read from
the environment and `.env` (:mod:`~s3maptiler.config.environment`) or a TOML layers
file (:mod:`~s3maptiler.config.layersfile`), checked by one set of validators
(:mod:`~s3maptiler.config.validators`). Imports :mod:`s3maptiler.tiles` only."""

from s3maptiler.config.environment import (
    CommandSettings,
    environment_values,
    load_command_settings,
    load_settings,
)
from s3maptiler.config.hidpi import base_layer_name, pixel_ratio_name, with_pixel_ratios
from s3maptiler.config.model import (
    DEFAULT_CACHE_CONTROL,
    DEFAULT_LAYER_NAME,
    WMS_VERSIONS,
    ConfigError,
    IPNetwork,
    Layer,
    Settings,
    checked_prefix,
    default_layer_name,
    default_meta_buffer,
    default_spool_dir,
    website_endpoint,
)

__all__ = [
    "CommandSettings",
    "DEFAULT_CACHE_CONTROL",
    "DEFAULT_LAYER_NAME",
    "WMS_VERSIONS",
    "ConfigError",
    "IPNetwork",
    "Layer",
    "Settings",
    "base_layer_name",
    "checked_prefix",
    "default_layer_name",
    "default_meta_buffer",
    "default_spool_dir",
    "environment_values",
    "load_command_settings",
    "load_settings",
    "pixel_ratio_name",
    "website_endpoint",
    "with_pixel_ratios",
]
