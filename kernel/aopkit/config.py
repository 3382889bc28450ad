"""Model options from a config file: ``$AOPKIT_CONFIG``, else ``~/.config/aopkit/config.toml``.

```toml
[models.openai]                 # every openai:* model
base_url = "http://127.0.0.1:8000/v1"

[models."openai:gpt-4o-mini"]   # this model only
timeout = 30
```
Arguments win over the environment, which wins over the file.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import AopkitError


def config_path(environ: Mapping[str, str]) -> Path:
    if environ.get("AOPKIT_CONFIG"):
        return Path(environ["AOPKIT_CONFIG"])
    base = environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "aopkit" / "config.toml"


def load_config(environ: Mapping[str, str]) -> dict[str, Any]:
    """The parsed config file, or an empty dict when there is none."""
    path = config_path(environ)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:  # a directory, unreadable
        raise AopkitError(f"config file {path}: cannot read it: {exc.strerror}") from None
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    try:
        data: dict[str, Any] = tomllib.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise AopkitError(f"config file {path}: {exc}") from None
    except RecursionError:
        raise AopkitError(f"config file {path}: nested too deeply") from None
    return data


def model_options(config: Mapping[str, Any], name: str) -> dict[str, Any]:
    """Options for ``provider:model`` from the config: the provider's table, then the model's."""
    models = config.get("models", {})
    provider = name.partition(":")[0]
    return {**models.get(provider, {}), **models.get(name, {})}
