from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from geo3d_apps.config import (
    ConfigError,
    from_dict,
    list_presets,
    parse_command_config,
    resolve_preset,
    split_config_flag,
    to_dict,
)


@dataclass
class Inner:
    size: int = 3
    """a size"""


@dataclass
class Toy:
    name: str = "a"
    """a name"""
    scale: float = 1.0
    mode: Literal["fast", "exact"] = "fast"
    out: Path = Path("out")
    sizes: tuple[int, ...] = (1, 2)
    corner: tuple[float, float, float] = (0.0, 0.0, 0.0)
    limit: int | None = None
    verbose: bool = False
    inner: Inner = field(default_factory=Inner)


def test_from_dict_coerces_and_nests():
    cfg = from_dict(Toy, {"scale": 2, "out": "x/y", "sizes": [4, 5, 6], "inner": {"size": 9}, "limit": None,
                          "corner": [-1, 2.5, 3]})
    assert cfg == Toy(scale=2.0, out=Path("x/y"), sizes=(4, 5, 6), inner=Inner(size=9), corner=(-1.0, 2.5, 3.0))
    assert isinstance(cfg.scale, float) and all(isinstance(v, float) for v in cfg.corner)
    assert from_dict(Toy, to_dict(cfg)) == cfg


@pytest.mark.parametrize(
    "data, message",
    [
        ({"nmae": "x"}, r"unknown key\(s\) \['nmae'\]"),
        ({"scale": "big"}, "scale: expected a number"),
        ({"mode": "slow"}, "mode: 'slow' is not one of"),
        ({"verbose": "yes"}, "verbose: expected true/false"),
        ({"limit": 1.5}, "limit: expected an integer"),
        ({"corner": [1, 2]}, "corner: expected 3 values"),
        ({"corner": [1, "a", 2]}, "corner: expected a number"),
        ({"inner": {"size": 1, "colour": 2}}, "inner: unknown key"),
        ([1, 2], "expected a mapping"),
    ],
)
def test_from_dict_errors_name_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(Toy, data, "preset.yaml")


def test_presets_and_command_line_overrides(tmp_path, monkeypatch):
    (tmp_path / "toy").mkdir()
    (tmp_path / "toy" / "big.yaml").write_text("scale: 10\nname: big\ninner:\n  size: 7\n")
    monkeypatch.setenv("GEO3D_CONFIGS", str(tmp_path))
    assert list_presets("toy") == ["big"]
    assert resolve_preset("toy", "big") == tmp_path / "toy" / "big.yaml"
    cfg = parse_command_config("toy", Toy, ["--config", "big", "--name", "cli"], "toy")
    assert (cfg.scale, cfg.name, cfg.inner.size) == (10.0, "cli", 7)  # CLI beats preset beats default
    cfg = parse_command_config("toy", Toy, [f"--config={tmp_path / 'toy' / 'big.yaml'}"], "toy")
    assert cfg.name == "big"
    with pytest.raises(ConfigError, match="no preset 'nope'.*presets: big"):
        parse_command_config("toy", Toy, ["--config", "nope"], "toy")


def test_split_config_flag():
    assert split_config_flag(["a", "--config", "x", "b"]) == ("x", ["a", "b"])
    assert split_config_flag(["--config=y"]) == ("y", [])
    with pytest.raises(ConfigError):
        split_config_flag(["--config"])


def test_unknown_option_is_a_usage_error():
    with pytest.raises(SystemExit) as info:
        parse_command_config("toy", Toy, ["--no-such-option", "1"], "toy")
    assert info.value.code == 2
