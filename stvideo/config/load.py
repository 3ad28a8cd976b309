"""Load a config from YAML (with ``_BASE_`` inheritance) and ``KEY VALUE`` overrides, strictly.

Unknown keys and values of the wrong type fail here, before anything is written, with the
full key name and the nearest valid key. yacs alone raises a bare ``KeyError`` with no hint.
"""

from __future__ import annotations

import argparse
import ast
import difflib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from fvcore.common.config import CfgNode

from .defaults import CHOICES, get_cfg


class ConfigError(ValueError):
    """A config key or value that stvideo cannot accept; the message names the key."""


def _all_keys(node: CfgNode, prefix: str = "") -> list[str]:
    keys = []
    for k, v in node.items():
        full = prefix + k
        keys += _all_keys(v, full + ".") if isinstance(v, CfgNode) else [full]
    return keys


def suggest_key(full_key: str, valid: list[str]) -> str | None:
    """Nearest valid key by full name, or by its last component if the section was wrong."""
    close = difflib.get_close_matches(full_key, valid, n=1, cutoff=0.6)
    if close:
        return close[0]
    leaf = full_key.rsplit(".", 1)[-1]
    by_leaf = {k.rsplit(".", 1)[-1]: k for k in valid}
    close = difflib.get_close_matches(leaf, list(by_leaf), n=1, cutoff=0.6)
    return by_leaf[close[0]] if close else None


def _decode(value: Any) -> Any:
    """Command-line strings become Python literals where they parse as one (yacs semantics)."""
    if not isinstance(value, str):
        return value
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value


def _coerce(full_key: str, value: Any, default: Any) -> Any:
    """Return ``value`` converted to the type of ``default`` or raise ConfigError."""
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif isinstance(default, str):
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # e.g. a numeric-looking name
    elif isinstance(default, (list, tuple)):
        if isinstance(value, (list, tuple)):
            return list(value)
    raise ConfigError(
        f"Config key {full_key} expects {type(default).__name__} (default {default!r}), "
        f"got {type(value).__name__} {value!r}"
    )


def _validate(node: CfgNode, updates: dict, valid: list[str], prefix: str = "") -> dict:
    """Check ``updates`` against ``node``; return a coerced copy ready to merge."""
    out = {}
    for key, value in updates.items():
        full = prefix + key
        if key == "_BASE_":
            continue
        if key not in node:
            hint = suggest_key(full, valid)
            raise ConfigError(f"Unknown config key {full}" + (f" (did you mean {hint}?)" if hint else ""))
        default = node[key]
        if isinstance(default, CfgNode):
            if not isinstance(value, dict):
                raise ConfigError(f"Config key {full} is a section; give it a mapping, not {value!r}")
            out[key] = _validate(default, value, valid, full + ".")
        else:
            out[key] = _coerce(full, value, default)
            if full in CHOICES and out[key] not in CHOICES[full]:
                raise ConfigError(f"Config key {full} must be one of {CHOICES[full]}, got {out[key]!r}")
    return out


def _opts_to_dict(opts: Sequence[str]) -> dict:
    if len(opts) % 2:
        raise ConfigError(f"Overrides must be KEY VALUE pairs; got an odd number of items: {list(opts)}")
    nested: dict = {}
    for key, value in zip(opts[0::2], opts[1::2], strict=True):
        parts = key.split(".")
        d = nested
        for p in parts[:-1]:
            d = d.setdefault(p, {})
            if not isinstance(d, dict):
                raise ConfigError(f"Config key {key} conflicts with an earlier override")
        d[parts[-1]] = _decode(value)
    return nested


def load_config(cfg_file: str | None = None, opts: Sequence[str] = ()) -> CfgNode:
    """Defaults, then ``cfg_file`` (resolving ``_BASE_``), then ``opts``; all validated first."""
    cfg = get_cfg()
    valid = _all_keys(cfg)
    if cfg_file:
        data = CfgNode.load_yaml_with_base(cfg_file, allow_unsafe=False)
        cfg.merge_from_other_cfg(CfgNode(_validate(cfg, data, valid)))
    if opts:
        cfg.merge_from_other_cfg(CfgNode(_validate(cfg, _opts_to_dict(opts), valid)))
    check_config(cfg)
    cfg.freeze()
    return cfg


def check_config(cfg: CfgNode) -> None:
    """Cross-key checks that a single key's type cannot express."""
    if cfg.SHARD_ID >= cfg.NUM_SHARDS:
        raise ConfigError(f"SHARD_ID ({cfg.SHARD_ID}) must be < NUM_SHARDS ({cfg.NUM_SHARDS})")
    world = max(cfg.NUM_GPUS, 1) * cfg.NUM_SHARDS
    if cfg.TRAIN.BATCH_SIZE % world:
        raise ConfigError(
            f"TRAIN.BATCH_SIZE ({cfg.TRAIN.BATCH_SIZE}) must be divisible by the number of processes "
            f"(max(NUM_GPUS, 1) * NUM_SHARDS = {world})"
        )
    if cfg.MODEL.COMPILE and cfg.TRAIN.STRATEGY == "fsdp":
        raise ConfigError("MODEL.COMPILE with TRAIN.STRATEGY fsdp is not supported; use one of them")
    if cfg.DATA.NUM_FRAMES < 1 or cfg.DATA.SAMPLING_RATE < 1:
        raise ConfigError("DATA.NUM_FRAMES and DATA.SAMPLING_RATE must be >= 1")


def build_arg_parser(description: str = "stvideo") -> argparse.ArgumentParser:
    """``--cfg FILE [KEY VALUE ...] [--opts KEY VALUE ...]``: both override spellings work."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--cfg", dest="cfg_file", default=None, help="YAML config file")
    parser.add_argument("overrides", nargs="*", help="KEY VALUE pairs overriding the config")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE pairs (PySlowFast)")
    return parser


def parse_args(argv: Sequence[str] | None = None, description: str = "stvideo") -> argparse.Namespace:
    """Parse the standard stvideo command line; ``args.opts`` holds all overrides in order."""
    return parse_with_overrides(build_arg_parser(description), argv)


def parse_with_overrides(
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    greedy: Mapping[str, Callable[[str], bool]] | None = None,
) -> argparse.Namespace:
    """Parse with a parser that has positional ``overrides`` and ``--opts``; merge both into ``args.opts``.

    ``greedy`` maps the dest of each ``nargs="+"`` option to a test of its own items: what the
    option swallowed that fails the test (trailing KEY VALUE pairs) goes back to the overrides.
    """
    args, extra = parser.parse_known_args(argv)
    # Trailing KEY VALUE pairs after other flags land in `extra`; keep them as overrides too.
    unknown_flags = [e for e in extra if e.startswith("--")]
    if unknown_flags:
        parser.error(f"unrecognized arguments: {' '.join(unknown_flags)}")
    spill: list[str] = []
    for dest, belongs in (greedy or {}).items():
        items = getattr(args, dest)
        spill += [i for i in items if not belongs(i)]
        setattr(args, dest, [i for i in items if belongs(i)])
    args.opts = list(args.overrides) + list(extra) + spill + list(args.opts or [])
    return args
