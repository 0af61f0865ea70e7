"""Runs that differ only in their seeds: one recipe measured several times.

A single run's score moves by a point or more with the seed on a benchmark like SST-5, so a
recipe is only better than another if it is better by more than that spread. The report
summarises each such group as mean and range, beside the leaderboard of single runs.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from textclf.reporting.experiments import Experiment, to_yaml

SEED_KEYS = ("train.seed",)


@dataclass(frozen=True)
class Replicates:
    """Two or more runs with the same params, data and code but for `SEED_KEYS`."""
    runs: list[Experiment]

    @property
    def seeds(self) -> list[str]:
        return [", ".join(to_yaml(e.params.get(key)) for key in SEED_KEYS) for e in self.runs]

    def spread(self, metric: str) -> tuple[float, float, float] | None:
        """(mean, min, max) of `metric` over the runs that have it; None if fewer than 2."""
        values = [e.metrics[metric] for e in self.runs if metric in e.metrics]
        if len(values) < 2:
            return None
        return statistics.fmean(values), min(values), max(values)


def replicate_groups(exps: list[Experiment]) -> list[Replicates]:
    """Groups of runs that differ only in their seeds (at least two seeds), in the order
    they are first listed; reruns of one seed alone are not a spread."""
    groups: dict[tuple, list[Experiment]] = {}
    for e in exps:
        recipe = tuple(sorted((k, to_yaml(v)) for k, v in e.params.items()
                              if k not in SEED_KEYS))
        groups.setdefault((e.data, recipe), []).append(e)
    return [group for group in map(Replicates, groups.values()) if len(set(group.seeds)) > 1]


def recipe_names(groups: list[Replicates]) -> list[str]:
    """Each group named by the params in which the groups differ: 'lr=0.0002, epochs=4'."""
    shown = [g.runs[0] for g in groups]
    keys = [key for key in dict.fromkeys(k for e in shown for k in e.params)
            if key not in SEED_KEYS and len({to_yaml(e.params.get(key)) for e in shown}) > 1]
    return [", ".join(f"{key.rsplit('.', 1)[-1]}={to_yaml(e.params.get(key))}" for key in keys)
            or "(same params)" for e in shown]


def spread_table(groups: list[Replicates], metrics: list[str]) -> tuple[list[str], list[list[str]]]:
    """(header, rows): a row per recipe with each metric as 'mean (min-max)'."""
    def cell(group: Replicates, metric: str) -> str:
        found = group.spread(metric)
        return "-" if found is None else "{:.4g} ({:.4g}-{:.4g})".format(*found)

    header = ["recipe", "runs", "seeds", *(f"{m} mean (range)" for m in metrics)]
    rows = [[name, str(len(g.runs)), " / ".join(g.seeds), *(cell(g, m) for m in metrics)]
            for name, g in zip(recipe_names(groups), groups)]
    return header, rows
