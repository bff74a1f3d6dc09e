"""Pruning of skip-units: MSPIC (multi-stage pruning by information clustering) and baselines.

    from edgeprune.prune import PruneConfig, prune_model
    result = prune_model(loaded, data, PruneConfig(stages=2), out_dir)

writes ``out_dir/pruned.pt`` (a checkpoint listing ``removed_units``), ``pruned.pt2`` (the same
model as a torch.export archive, see :mod:`edgeprune.pt2`), ``mspic.json`` (every
decision), ``mspic.png`` (MI per unit and stage, removed units marked) and ``stages/`` (one
checkpoint per finished stage, for ``resume``).
"""

from edgeprune.prune.methods import get_method, list_methods, register_method
from edgeprune.prune.mspic import PruneConfig, PruneResult, prune_model
from edgeprune.prune.policies import Policy, bin_clusters, build_policies, kmeans_clusters

__all__ = ["Policy", "PruneConfig", "PruneResult", "bin_clusters", "build_policies",
           "get_method", "kmeans_clusters", "list_methods", "prune_model", "register_method"]
