"""Parsing of ``name`` / ``name:arg[:arg]`` specification strings (used for priors and guides).

A spec table maps each name to a :class:`SpecEntry`: the factory that builds the object and the
names and parsers of its optional ``:``-separated arguments. Arguments that are not given fall
back to the factory's own keyword defaults, so the table is the only place where a spec string
is interpreted (no ``if name == ...`` ladders). The last argument takes the rest of the string,
colons included (``module:pkg.mod:Factory`` has one argument, ``pkg.mod:Factory``).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, NamedTuple, Tuple
from .errors import InputError

__all__ = ["SpecEntry", "parse_spec", "canonical_spec", "import_target", "positive_int", "positive_float", "spec_usage"]


class SpecEntry(NamedTuple):
    """One row of a spec table.

    :param factory: builds the object; called with the positional arguments of the table's
        user (e.g. ``latent_dim``) and the parsed arguments as keywords.
    :param params: ``(keyword, parser)`` of each optional ``:``-separated argument, in order.
    :param usage: how the spec is written, for error messages (e.g. ``"mog[:K]"``).
    :param help: one line describing it.
    """

    factory: Callable[..., Any]
    params: Tuple[Tuple[str, Callable[[str], Any]], ...] = ()
    usage: str = ""
    help: str = ""


def positive_int(text: str) -> int:
    """Parse a positive integer (``ValueError`` otherwise)."""
    try:
        value = int(text)
    except ValueError:
        raise InputError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise InputError(f"expected a positive integer, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """Parse a positive finite number (``ValueError`` otherwise)."""
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"expected a positive number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise InputError(f"expected a positive number, got {text!r}")
    return value


def spec_usage(table: Mapping[str, SpecEntry]) -> str:
    """The accepted forms of a table, e.g. ``"standard, mog[:K], ..."``."""
    return ", ".join(entry.usage or name for name, entry in table.items())


def parse_spec(text: str, table: Mapping[str, SpecEntry], what: str) -> Tuple[SpecEntry, Dict[str, Any]]:
    """Split ``text`` into its table entry and keyword arguments.

    :param text: e.g. ``"mog:10"``.
    :param table: the spec table.
    :param what: ``"prior"`` or ``"guide"``, for error messages.
    :raises ValueError: naming the spec and what was expected.
    """
    if not isinstance(text, str):
        raise InputError(f"{what} spec must be a string, got {text!r}")
    name, sep, rest = text.partition(":")
    entry = table.get(name)
    if entry is None:
        raise InputError(f"unknown {what} {text!r}: expected one of {spec_usage(table)}")
    if not sep:
        return entry, {}
    if not entry.params:
        raise InputError(f"{what} {name!r} takes no arguments, got {text!r}")
    values = rest.split(":", len(entry.params) - 1)
    kwargs = {}
    for (keyword, parser), raw in zip(entry.params, values):
        try:
            kwargs[keyword] = parser(raw)
        except ValueError as e:
            raise InputError(f"{what} {text!r}: bad {keyword} ({e}); expected {entry.usage}") from None
    return entry, kwargs


def canonical_spec(text: str, table: Mapping[str, SpecEntry], what: str) -> Tuple[str, Tuple[Tuple[str, Any], ...]]:
    """What a spec string means: its name and every optional argument, with the factory's default
    where the string leaves one out, so ``"vamp"`` and ``"vamp:500"`` compare equal when 500 is
    the VampPrior's default.

    :raises ValueError: as :func:`parse_spec`.
    """
    import inspect
    entry, kwargs = parse_spec(text, table, what)
    try:
        signature = inspect.signature(entry.factory).parameters
    except (TypeError, ValueError):
        signature = {}
    full = []
    for keyword, _ in entry.params:
        default = signature[keyword].default if keyword in signature else None
        full.append((keyword, kwargs.get(keyword, None if default is inspect.Parameter.empty else default)))
    return text.partition(":")[0], tuple(full)


def import_target(target: str, what: str, example: str) -> Callable[..., Any]:
    """``pkg.mod:Factory`` (the argument of a ``module:`` spec): import ``pkg.mod`` and return its
    attribute ``Factory`` (nothing else is imported or evaluated).

    :param target: ``"pkg.mod:Factory"``.
    :param what: e.g. ``"prior"`` or ``"model"``, for error messages.
    :param example: an example target for the message.
    :raises InputError: one line naming what is wrong.
    """
    import importlib
    module_name, sep, attr = target.partition(":")
    spec = f"module:{target}"
    if not (module_name and sep and attr.isidentifier()):
        raise InputError(f"{what} {spec!r}: expected module:pkg.mod:Factory, e.g. module:{example}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise InputError(f"{what} {spec!r}: cannot import {module_name!r} ({e}); it must be importable "
                         f"(installed, or its folder on PYTHONPATH)") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise InputError(f"{what} {spec!r}: module {module_name!r} has no callable {attr!r}")
    return factory
