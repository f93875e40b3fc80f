"""The registered clip scorers, in the order they run and decide; built-ins register on import of
`vidmill.pipeline.scoring`, a new filter with `@register` in its own file (README: writing a filter)."""

from __future__ import annotations

from typing import Any

_SCORERS: dict[str, Any] = {}


def register(cls: Any) -> Any:
    """Add a scorer class (a decorator). Its `settings` / `thresholds` dataclasses, when it has them, become
    the config sections `scoring.<name>` / `thresholds.<name>` unless the config already has such a field."""
    if _SCORERS.get(cls.name, cls) is not cls:
        raise ValueError(f"a scorer named {cls.name!r} is registered already")
    from vidmill.pipeline.outcomes import declare, reason

    _SCORERS[cls.name] = cls
    for given in cls.gives:
        declare(given.name, given.meaning, given.setting)
    reason(f"{cls.name}_error")  # declared: the scorer failed on a clip
    return cls


def unregister(name: str) -> None:
    _SCORERS.pop(name, None)


def registered() -> list[Any]:
    """Every registered scorer class, in registration order (built-ins first)."""
    import vidmill.pipeline.scoring  # noqa: F401  (registers the built-ins)

    return list(_SCORERS.values())


def config_sections(group: str, builtin: set[str]) -> dict[str, type]:
    """`group` is "scoring" or "thresholds": the dataclass of each registered scorer's own section there."""
    attr = "settings" if group == "scoring" else "thresholds"
    return {name: getattr(cls, attr) for name, cls in _SCORERS.items()
            if getattr(cls, attr, None) is not None and name not in builtin}
