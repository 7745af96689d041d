"""Closed-form solutions of the gradient flow (docs/theory.md §4)."""

from ._exact import (
    asymptotic_rate_balanced as asymptotic_rate_balanced,
    balanced_scalar as balanced_scalar,
    lambda_balanced_error as lambda_balanced_error,
    lambda_balanced_gram as lambda_balanced_gram,
    scalar as scalar,
)
