"""Environment flags, read once and typed. Each flag is documented where it is used."""

from __future__ import annotations

import os


def flag(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() not in ("", "0", "false", "no", "off")


def integer(name: str, default: int) -> int:
    value = os.environ.get(name)
    try:
        return int(value) if value is not None else default
    except ValueError as error:
        raise ValueError(f"environment variable {name}={value!r}: expected an integer") from error
