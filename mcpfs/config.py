"""Where mcpfs keeps things, and its configuration file.

``MCPFS_HOME=DIR`` puts config, state, cache and the control socket under DIR (tests and
users running several instances rely on it). Otherwise the XDG locations of the
architecture: ``~/.config/mcpfs``, ``~/.local/share/mcpfs``, ``~/.cache/mcpfs`` and
``$XDG_RUNTIME_DIR/mcpfs``. Nothing here creates directories except ``ensure()``.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InvalidInput


@dataclass(frozen=True)
class Paths:
    config_dir: Path
    state_dir: Path
    cache_dir: Path
    runtime_dir: Path

    @property
    def config_file(self) -> Path:
        return self.config_dir / "config.toml"

    @property
    def repo_dir(self) -> Path:
        """The embedded IPFS repo (kubo-like: blocks/, pins, MFS root)."""
        return self.state_dir / "ipfs"

    @property
    def socket_path(self) -> Path:
        return self.runtime_dir / "control.sock"

    def ensure(self) -> Paths:
        for folder in (self.config_dir, self.state_dir, self.cache_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.runtime_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.runtime_dir, 0o700)
        return self


def _xdg(var: str, default: str) -> Path:
    value = os.environ.get(var)
    return Path(value) if value else Path.home() / default


def paths() -> Paths:
    home = os.environ.get("MCPFS_HOME")
    if home:
        root = Path(home).expanduser().absolute()
        return Paths(root / "config", root / "state", root / "cache", root / "run")
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    run_dir = Path(runtime) / "mcpfs" if runtime \
        else _xdg("XDG_STATE_HOME", ".local/state") / "mcpfs" / "run"
    return Paths(
        _xdg("XDG_CONFIG_HOME", ".config") / "mcpfs",
        _xdg("XDG_DATA_HOME", ".local/share") / "mcpfs",
        _xdg("XDG_CACHE_HOME", ".cache") / "mcpfs",
        run_dir,
    )


@dataclass
class Config:
    """The parsed config file; sections are plain dicts read by the parts that own them."""

    sections: dict[str, dict[str, Any]] = field(default_factory=dict)
    source: Path | None = None

    def section(self, name: str) -> dict[str, Any]:
        return self.sections.get(name, {})


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Read the TOML config (missing default file = empty config; a bad file = InvalidInput)."""
    file = Path(path) if path else paths().config_file
    if not file.exists():
        if path:
            raise InvalidInput(f"config file not found: {file}")
        return Config()
    try:
        data = tomllib.loads(file.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{file}: {exc}") from None
    return Config({k: v for k, v in data.items() if isinstance(v, dict)}, file)
