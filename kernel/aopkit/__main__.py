"""``python -m aopkit``: the ``aopkit`` command."""

from __future__ import annotations

from .cli import main

raise SystemExit(main())
