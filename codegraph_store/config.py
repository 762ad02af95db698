"""Configuration: the packaged ``optimization.toml`` loaded into attrs classes.

The defaults ship inside the wheel (``codegraph_store/defaults``). A user's file
or dict overrides any subset; unknown sections or keys and values of the wrong
type are refused with :class:`ConfigError` naming the key, so a typo never
silently falls back to a default.
"""

from __future__ import annotations

import os
import tomllib
from importlib import resources
from typing import Any, Mapping

import attrs

from .errors import ConfigError


def _positive(instance, attribute, value):
    if value <= 0:
        raise ConfigError(f"{attribute.name} must be > 0, got {value}")


def _non_negative(instance, attribute, value):
    if value < 0:
        raise ConfigError(f"{attribute.name} must be >= 0, got {value}")


def _fraction(instance, attribute, value):
    if not 0.0 < value <= 1.0:
        raise ConfigError(f"{attribute.name} must be in (0, 1], got {value}")


def _one_of(*choices: str):
    def check(instance, attribute, value):
        if value not in choices:
            raise ConfigError(f"{attribute.name} must be one of {', '.join(choices)}, got {value!r}")
    return check


def _pair(instance, attribute, value):
    if len(value) != 2:
        raise ConfigError(f"{attribute.name} must be [baseline, target], got {list(value)}")


@attrs.frozen
class PerformanceTargets:
    """[baseline, target] pairs of the original plan, read by bench/validate.py and
    the monitor, and the switch that turns the monitor on."""

    node_query_latency_ms: tuple[float, float] = attrs.field(validator=_pair)
    edge_traversal_latency_ms: tuple[float, float] = attrs.field(validator=_pair)
    vector_search_latency_ms: tuple[float, float] = attrs.field(validator=_pair)
    rag_latency_ms: tuple[float, float] = attrs.field(validator=_pair)
    graph_memory_mb: tuple[float, float] = attrs.field(validator=_pair)
    cache_memory_mb: tuple[float, float] = attrs.field(validator=_pair)
    embedding_memory_mb: tuple[float, float] = attrs.field(validator=_pair)
    concurrent_queries_per_sec: tuple[float, float] = attrs.field(validator=_pair)
    node_processing_per_sec: tuple[float, float] = attrs.field(validator=_pair)
    embedding_generation_per_sec: tuple[float, float] = attrs.field(validator=_pair)
    enable_monitoring: bool

    def lower_is_better(self, name: str) -> bool:
        """Latencies and memory improve downwards, rates (``*_per_sec``) upwards."""
        return not name.endswith("_per_sec")


@attrs.frozen
class MemoryOptimization:
    embedding_pool_size: int = attrs.field(validator=_positive)
    embedding_pool_dtype: str = attrs.field(validator=_one_of("float32", "float16", "int8"))
    compact_cache_size: int = attrs.field(validator=_positive)
    cache_max_bytes: int = attrs.field(validator=_positive)
    memory_pressure_threshold: float = attrs.field(validator=_fraction)
    sqlite_cache_kib: int = attrs.field(validator=_positive)
    arena_chunk_size: int = attrs.field(validator=_positive)
    enable_cache: bool


@attrs.frozen
class CpuOptimization:
    simd_threshold: int = attrs.field(validator=_non_negative)
    thread_pool_size: int = attrs.field(validator=_non_negative)
    batch_size: int = attrs.field(validator=_positive)
    cpu_affinity_enabled: bool
    enable_simd: bool

    def workers(self) -> int:
        """Number of worker processes/threads: ``thread_pool_size`` or all usable cores."""
        if self.thread_pool_size:
            return self.thread_pool_size
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # not on Linux
            return max(1, os.cpu_count() or 1)


@attrs.frozen
class IoOptimization:
    read_batch_size: int = attrs.field(validator=_positive)
    write_buffer_size: int = attrs.field(validator=_positive)
    prefetch_depth: int = attrs.field(validator=_non_negative)
    compression_threshold: int = attrs.field(validator=_non_negative)
    enable_batching: bool
    enable_compression: bool
    enable_prefetch: bool


_SECTIONS: dict[str, type] = {
    "performance_targets": PerformanceTargets,
    "memory_optimization": MemoryOptimization,
    "cpu_optimization": CpuOptimization,
    "io_optimization": IoOptimization,
}


def _coerce(section: str, field: attrs.Attribute, value: Any) -> Any:
    """Check a TOML value against the field's declared type; ints widen to floats."""
    name = f"{section}.{field.name}"
    annotation = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", "")
    if annotation == "bool":
        if type(value) is not bool:
            raise ConfigError(f"{name} must be true or false, got {value!r}")
        return value
    if annotation == "str":
        if type(value) is not str:
            raise ConfigError(f"{name} must be a string, got {value!r}")
        return value
    if annotation == "int":
        if type(value) is not int:
            raise ConfigError(f"{name} must be an integer, got {value!r}")
        return value
    if annotation == "float":
        if type(value) not in (int, float):
            raise ConfigError(f"{name} must be a number, got {value!r}")
        return float(value)
    if annotation.startswith("tuple"):
        if not isinstance(value, (list, tuple)) or not all(
                type(v) in (int, float) for v in value):
            raise ConfigError(f"{name} must be a list of numbers, got {value!r}")
        return tuple(float(v) for v in value)
    raise ConfigError(f"{name}: unsupported field type {annotation}")  # pragma: no cover


@attrs.frozen
class Config:
    """Every knob of the store, grouped as in ``config/optimization.toml``."""

    performance_targets: PerformanceTargets
    memory_optimization: MemoryOptimization
    cpu_optimization: CpuOptimization
    io_optimization: IoOptimization

    @classmethod
    def defaults(cls) -> "Config":
        """The packaged defaults."""
        return cls.from_dict({})

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "Config":
        """Defaults overridden by a TOML file holding any subset of the sections."""
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except OSError as e:
            raise ConfigError(f"cannot read config file {os.fspath(path)!r}: {e.strerror}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {os.fspath(path)!r} is not valid TOML: {e}") from None
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, overrides: Mapping[str, Mapping[str, Any]]) -> "Config":
        """Defaults overridden by ``{"section": {"key": value}}``."""
        if not isinstance(overrides, Mapping):
            raise ConfigError(f"config must be a mapping of sections, got {type(overrides).__name__}")
        merged = _packaged_defaults()
        for section, values in overrides.items():
            if section not in _SECTIONS:
                raise ConfigError(f"unknown config section {section!r}; known: {', '.join(_SECTIONS)}")
            if not isinstance(values, Mapping):
                raise ConfigError(f"config section {section!r} must be a table")
            known = {f.name for f in attrs.fields(_SECTIONS[section])}
            for key, value in values.items():
                if key not in known:
                    raise ConfigError(f"unknown config key {section}.{key}")
                merged[section][key] = value
        built = {}
        for section, klass in _SECTIONS.items():
            fields = {f.name: f for f in attrs.fields(klass)}
            missing = set(fields) - set(merged[section])
            if missing:
                raise ConfigError(f"config section {section} lacks {', '.join(sorted(missing))}")
            built[section] = klass(**{k: _coerce(section, fields[k], v)
                                      for k, v in merged[section].items()})
        return cls(**built)

    def replace(self, **changes: Any) -> "Config":
        """A copy with ``section__key=value`` changes, e.g. ``io_optimization__enable_batching=False``."""
        overrides: dict[str, dict[str, Any]] = {}
        for dotted, value in changes.items():
            section, _, key = dotted.partition("__")
            overrides.setdefault(section, {})[key] = value
        current = {name: attrs.asdict(getattr(self, name)) for name in _SECTIONS}
        for section, values in overrides.items():
            if section not in current:
                raise ConfigError(f"unknown config section {section!r}")
            current[section].update(values)
        return Config.from_dict(current)

    def as_dict(self) -> dict[str, dict[str, Any]]:
        return {name: attrs.asdict(getattr(self, name)) for name in _SECTIONS}


def _packaged_defaults() -> dict[str, dict[str, Any]]:
    text = resources.files("codegraph_store.defaults").joinpath("optimization.toml").read_text("utf-8")
    data = tomllib.loads(text)
    return {section: dict(data.get(section, {})) for section in _SECTIONS}
