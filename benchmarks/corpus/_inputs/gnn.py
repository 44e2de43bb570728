"""Example input for weihua916/powerful-gnns GraphCNN: a list of graph objects shaped like its S2VGraph.

Written for the corpus (not taken from the repository): each graph has `g` (only len() is used),
`node_features`, `neighbors`, `max_neighbor` and `edge_mat`, the attributes GraphCNN.forward reads.
"""
from types import SimpleNamespace

import torch


def _ring(n, dim):
    edges = [(i, (i + 1) % n) for i in range(n)]
    neighbors = [[] for _ in range(n)]
    for a, b in edges:
        neighbors[a].append(b)
        neighbors[b].append(a)
    both = edges + [(b, a) for a, b in edges]
    return SimpleNamespace(
        g=list(range(n)),
        node_features=torch.randn(n, dim),
        neighbors=neighbors,
        max_neighbor=max(len(x) for x in neighbors),
        edge_mat=torch.tensor(both, dtype=torch.long).t(),
    )


def graph_batch(dim=7):
    return [_ring(4, dim), _ring(6, dim)]
