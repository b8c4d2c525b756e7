"""Verifiable tasks: the built-in synthetic ones and loaders for local datasets."""

from .data import load_problems
from .synthetic import TASKS, characters, generate

__all__ = ["TASKS", "characters", "generate", "load_problems"]
