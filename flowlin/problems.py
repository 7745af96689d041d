"""Generators for the papers' data (docs/theory.md §5)."""

from ._generators import (
    factorization as factorization,
    gaussian as gaussian,
    whitened as whitened,
)
