"""Initializations of `flowlin.LinearNetwork` (theory.md §2, §4, §5)."""

from ._gram_init import gram_init as gram_init
from ._init import (
    balanced_like as balanced_like,
    gaussian as gaussian,
    lambda_balanced as lambda_balanced,
    pad_width as pad_width,
    paper as paper,
    project_to_invariant_set as project_to_invariant_set,
)
