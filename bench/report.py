"""The one way every benchmark saves its JSON report."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional


def write(report: dict, path: Optional[str]) -> None:
    """Write `report` to `path` (nothing without one) and say so."""
    if path:
        Path(path).write_text(json.dumps(report, indent=2) + "\n")
        print(f"report written to {path}")
