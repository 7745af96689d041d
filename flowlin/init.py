"""Initializations of `flowlin.LinearNetwork`, of their width-free statistics `flowlin.GramInit`
(docs/theory.md §2–§5), and of `flowlin.DeepLinearNetwork` (docs/theory.md §6)."""

from ._deep_init import (
    deep_balanced as deep_balanced,
    deep_gaussian as deep_gaussian,
    deep_orthogonal as deep_orthogonal,
)
from ._gram_init import gram_init as gram_init
from ._init import (
    balanced_like as balanced_like,
    gaussian as gaussian,
    lambda_balanced as lambda_balanced,
    pad_width as pad_width,
    paper as paper,
    project_to_invariant_set as project_to_invariant_set,
    reduce_width as reduce_width,
)
from ._wishart import wishart as wishart
