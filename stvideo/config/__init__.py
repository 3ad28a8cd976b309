"""Configuration: declared defaults plus strict YAML / command-line loading."""

from .defaults import get_cfg
from .load import ConfigError, load_config, parse_args

__all__ = ["ConfigError", "get_cfg", "load_config", "parse_args"]
