"""The Python indexer: source tree -> nodes, edges and references in a store."""

from .build import IndexReport, index_tree, scan

__all__ = ["IndexReport", "index_tree", "scan"]
