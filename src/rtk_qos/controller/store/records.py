"""What the SQL backends share: JSON columns in and out, and the read filters."""
from __future__ import annotations

import json
from typing import Optional, Sequence

# Columns holding JSON, per table (alerts.state is plain text, devices.state a payload).
JSON_COLUMNS = {"devices": {"health_reasons", "capabilities", "attr", "state", "telemetry"},
                "alerts": {"detail"}, "sessions": {"config", "progress"}, "commands": {"args"},
                "replies": {"ack", "result"}, "events": {"payload"}}


def row(table: str, description: Sequence, values: tuple) -> dict:
    """A result row as a dict, its JSON columns (fetched as text) decoded."""
    json_columns = JSON_COLUMNS[table]
    return {name: json.loads(value) if name in json_columns and value is not None else value
            for (name, *_), value in zip(description, values)}


def values(table: str, record: dict, columns: tuple) -> list:
    json_columns = JSON_COLUMNS[table]
    return [json.dumps(record.get(c), separators=(",", ":")) if c in json_columns and record.get(c) is not None
            else record.get(c) for c in columns]


def where(mark: str, equal: Sequence[tuple[str, object]], since: Optional[tuple[str, int]] = None) -> tuple[str, list]:
    """A WHERE clause (or "") with `mark` as the placeholder: `column = value` for each value given,
    and `since` as (a clause with {m} for the placeholder, its value) used for every placeholder."""
    clauses, params = [], []
    for column, value in equal:
        if value is not None:
            clauses.append(f"{column} = {mark}")
            params.append(value)
    if since is not None and since[1] is not None:
        clause, value = since
        clauses.append(clause.format(m=mark))
        params += [value] * clause.count("{m}")
    return (f"WHERE {' AND '.join(clauses)}" if clauses else ""), params
