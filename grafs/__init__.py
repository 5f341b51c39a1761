"""GRAFS: gradient-based search of activation functions (Strack, Safari & Hutter 2024).

The public API::

    from grafs import Genotype, SearchCell, SearchConfig, SearchResult, search, search_model, apply_genotype

- :class:`Genotype`: a discovered activation as data (JSON file format, formula, drop-in module).
- :class:`SearchCell`: the relaxed activation cell (DrNAS Dirichlet mixture, one sample per site).
- :func:`search_model`: GRAFS on your own model and data; :func:`apply_genotype` puts a found
  activation into a model in place of its activations.
- :func:`search` / :class:`SearchConfig` / :class:`SearchResult`: the bilevel search behind it,
  for any task that implements :class:`~grafs.search.SearchTask`.

Names are imported on first use, so ``import grafs`` (and its light modules such as
``grafs.errors`` and ``grafs.config``) does not load torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Genotype": "grafs.genotype",
    "SearchCell": "grafs.cell",
    "SearchConfig": "grafs.config",
    "SearchOptions": "grafs.config",
    "SearchResult": "grafs.search",
    "SearchTask": "grafs.search",
    "search": "grafs.search",
    "search_model": "grafs.model_search",
    "apply_genotype": "grafs.model_search",
    "UserError": "grafs.errors",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'grafs' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
