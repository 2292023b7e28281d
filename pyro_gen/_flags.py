"""Command-line flags declared where their meaning lives: the checked number types given to
argparse, and :class:`Flag`, a flag of one family (its own settings), which the family's entry in
:data:`pyro_gen.families.FAMILIES` lists and ``pyro-gen train`` adds to its parser."""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from typing import Callable, Optional

__all__ = ["Flag", "checked", "positive_int", "nonnegative_int", "positive_float", "nonnegative_float", "fraction"]


def checked(convert: Callable[[str], object], ok: Callable[[object], bool], what: str):
    """An argparse ``type``: ``convert(text)`` that must satisfy ``ok``, else "expected WHAT"."""
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value
    return parse


positive_int = checked(int, lambda v: v >= 1, "a positive integer")
nonnegative_int = checked(int, lambda v: v >= 0, "a non-negative integer")
positive_float = checked(float, lambda v: v > 0 and math.isfinite(v), "a positive number")
nonnegative_float = checked(float, lambda v: v >= 0 and math.isfinite(v), "a non-negative number")
fraction = checked(float, lambda v: 0 <= v < 1, "a number in [0, 1)")


@dataclass(frozen=True)
class Flag:
    """A flag of one family, e.g. ``--gan-loss`` of the GAN.

    :param name: the flag, ``--name``.
    :param key: what it sets: a field of the family's settings, or an option its ``configure``
        receives (:class:`pyro_gen.families.Family`).
    :param help: one line for ``--help`` (shown under the family's name).
    :param required: the family cannot train without it.
    :param kwargs: more keyword arguments of ``argparse.ArgumentParser.add_argument`` (``type``,
        ``choices``, ``metavar``, ``action``).
    """

    name: str
    key: str
    help: str
    required: bool = False
    kwargs: dict = field(default_factory=dict)

    @property
    def dest(self) -> str:
        """The attribute of the parsed arguments."""
        return self.name[2:].replace("-", "_")

    def add_to(self, parser) -> None:
        """Add the flag to ``parser`` (an ``argparse`` parser or argument group: ``pyro-gen train``
        gives each family's flags a group of their own)."""
        parser.add_argument(self.name, help=self.help, **self.kwargs)

    def value(self, args: argparse.Namespace) -> Optional[object]:
        """The value given on the command line, ``None`` when the flag was not given."""
        return getattr(args, self.dest, None)
