"""YAML for files a user hands the app (sweeps): ``yaml.safe_load`` with aliases bounded.

Safe loading builds no objects, but an alias stands for its anchor's whole subtree each
time it is used, so a few lines of nested aliases (a "billion laughs" file) describe a
structure of billions of values once it is walked or copied (as a sweep expands its
grid). The composed document is measured with each alias counted at its expanded size
(memoized: cheap) and refused with ``yaml.YAMLError`` beyond ``MAX_NODES``.
"""

from __future__ import annotations

import yaml

MAX_NODES = 100_000  # a sweep file with every alias written out is far smaller


def expanded_size(node, memo: dict | None = None) -> int:
    """Number of nodes ``node`` stands for with every alias written out."""
    memo = {} if memo is None else memo
    if id(node) in memo:
        return memo[id(node)]
    memo[id(node)] = 1  # a recursive alias counts once (safe construction refuses nothing here)
    if isinstance(node, yaml.SequenceNode):
        size = 1 + sum(expanded_size(child, memo) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size = 1 + sum(expanded_size(k, memo) + expanded_size(v, memo) for k, v in node.value)
    else:
        size = 1
    memo[id(node)] = size
    return size


def load(text: str):
    """Parse ``text`` like ``yaml.safe_load``; a document that expands beyond
    ``MAX_NODES`` values raises ``yaml.YAMLError``."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if expanded_size(node) > MAX_NODES:
            raise yaml.YAMLError(f"its aliases (*name) expand to more than {MAX_NODES} values: write them out")
        return loader.construct_document(node)
    finally:
        loader.dispose()
