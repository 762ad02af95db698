"""Configuration: packaged defaults, overrides, refusal of unknown keys and wrong types."""

import pathlib
import re

import attrs
import pytest

import codegraph_store
from codegraph_store import Config
from codegraph_store.errors import ConfigError


def test_defaults_come_from_the_packaged_file():
    config = Config.defaults()
    assert config.io_optimization.write_buffer_size == 1000
    assert config.io_optimization.compression_threshold == 1024
    assert config.memory_optimization.compact_cache_size == 100000
    assert config.cpu_optimization.simd_threshold == 64
    assert config.performance_targets.node_query_latency_ms == (100.0, 50.0)


def test_dict_and_file_overrides(tmp_path):
    config = Config.from_dict({"io_optimization": {"write_buffer_size": 7}})
    assert config.io_optimization.write_buffer_size == 7
    assert config.io_optimization.read_batch_size == 100  # untouched keys keep defaults
    path = tmp_path / "c.toml"
    path.write_text("[cpu_optimization]\nthread_pool_size = 3\n")
    assert Config.from_file(path).cpu_optimization.thread_pool_size == 3
    assert Config.defaults().replace(io_optimization__enable_batching=False).io_optimization.enable_batching is False


@pytest.mark.parametrize("overrides, message", [
    ({"io_optimization": {"write_bufer_size": 5}}, "io_optimization.write_bufer_size"),
    ({"io": {"write_buffer_size": 5}}, "'io'"),
    ({"io_optimization": {"write_buffer_size": "5"}}, "io_optimization.write_buffer_size"),
    ({"io_optimization": {"write_buffer_size": 1.5}}, "io_optimization.write_buffer_size"),
    ({"io_optimization": {"enable_batching": 1}}, "io_optimization.enable_batching"),
    ({"io_optimization": {"write_buffer_size": 0}}, "write_buffer_size"),
    ({"memory_optimization": {"memory_pressure_threshold": 1.5}}, "memory_pressure_threshold"),
    ({"performance_targets": {"graph_memory_mb": [1, 2, 3]}}, "graph_memory_mb"),
    ({"io_optimization": 5}, "io_optimization"),
])
def test_bad_overrides_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        Config.from_dict(overrides)


def test_config_error_is_a_value_error():
    with pytest.raises(ValueError):
        Config.from_dict({"nope": {}})


def test_bad_toml_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[io_optimization\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        Config.from_file(path)
    with pytest.raises(ConfigError, match="cannot read"):
        Config.from_file(tmp_path / "missing.toml")


def test_every_setting_is_used_by_the_code():
    """No dead settings: each key is read somewhere outside config.py."""
    package = pathlib.Path(codegraph_store.__file__).parent
    bench = package.parent / "bench"
    sources = "".join(p.read_text() for p in package.rglob("*.py") if p.name != "config.py")
    if bench.is_dir():
        sources += "".join(p.read_text() for p in bench.rglob("*.py"))
    config = Config.defaults()
    unused = [f"{section}.{field.name}"
              for section, value in config.as_dict().items()
              for field in attrs.fields(type(getattr(config, section)))
              if not re.search(r"\b" + field.name + r"\b", sources)]
    assert unused == []
