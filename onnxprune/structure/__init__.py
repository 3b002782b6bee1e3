"""Structured removal of whole units (neurons, channels, attention heads) so tensors shrink.

``specs`` (how each op carries channels) -> ``groups`` (coupled tensors, readers, writers, why a
group is frozen) -> ``scores`` (pure unit importance and allocation) -> ``shrink`` (surgery).
``prune_units`` ties them together for ``Pipeline``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import onnx

from ..calibrate.stats import LayerStats
from ..config import PruneConfig
from ..graph import GraphView
from ..layers import Layer, find_layers
from .groups import GraphIndex, Group, find_groups
from .scores import (
    UNIT_ALLOCATIONS,
    UNIT_SCORERS,
    GroupData,
    ReaderData,
    UnitScorer,
    WriterData,
    compensation,
    keep_floor,
)
from .shrink import ReaderChange, Removal, compensate, cut_units, zero_columns

__all__ = ["UNIT_SCORERS", "GroupReport", "StructuredResult", "analyse", "prune_units"]


@dataclass
class GroupReport:
    name: str
    kind: str
    units_before: int
    units_after: int
    writers: list[str]
    readers: list[str]
    frozen: list[str]


@dataclass
class StructuredResult:
    model: onnx.ModelProto
    groups: list[GroupReport]
    warnings: list[str]


StatsFor = Callable[[list[Layer]], Mapping[str, LayerStats]]


def analyse(
    model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]], config: PruneConfig
) -> tuple[list[Group], list[Layer]]:
    """The model's dependency groups (``--exclude`` freezes the groups it touches)."""
    layers = find_layers(GraphView(model), dataclasses.replace(config, exclude=())).layers
    groups = find_groups(GraphIndex(model, shapes), layers)
    for group in groups:
        members = [*group.writers, *(r.layer for r in group.readers)]
        excluded = [m.name for m in members if config.is_excluded(m.name, m.weight_name)]
        if excluded:
            group.freeze(f"excluded by --exclude ({', '.join(excluded)})")
    return groups, layers


def prune_units(
    model: onnx.ModelProto,
    shapes: dict[str, tuple[int, ...]],
    config: PruneConfig,
    stats_for: StatsFor,
    cut: bool = True,
) -> StructuredResult:
    """Remove ``config.structured`` of the units of the model's unfrozen groups. With
    ``cut=False`` the units are only masked and compensated (the reference the cut model must
    match exactly)."""
    groups, _ = analyse(model, shapes, config)
    active = [g for g in groups if not g.frozen and g.units >= 2]
    readers = list({r.layer.weight_name: r.layer for g in active for r in g.readers}.values())
    stats = stats_for(readers) if readers else {}
    scorer = UNIT_SCORERS[config.structured_score]
    data = [_group_data(group, stats) for group in active]
    scores = [scorer.score(d) for d in data]
    removed = _chosen_units(active, scores, scorer, config)
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    view = GraphView(copy)
    copy_layers = {
        layer.weight_name: layer
        for layer in find_layers(view, dataclasses.replace(config, exclude=())).layers
    }
    changes: dict[str, ReaderChange] = {}
    for group, group_data, units in zip(active, data, removed, strict=True):
        for reader, reader_data in zip(group.readers, group_data.readers, strict=True):
            columns = [reader_data.columns[u] for u in units]
            delta = compensation(reader_data, units) if scorer.compensate else None
            _merge(changes, reader.layer.weight_name, columns, delta)
    zero_columns(view, copy_layers, changes)
    cut_rows: dict[str, np.ndarray] = {}
    if cut:
        cut_units(view, [Removal(g, u) for g, u in zip(active, removed, strict=True)])
        cut_rows = _writer_rows(active, removed)
    # After the cut, a reader that also writes a cut group has fewer outputs: its compensation
    # (and any bias it creates) loses the same rows.
    warnings = compensate(view, copy_layers, changes, cut_rows)
    view.flush_inserts()
    cut_of = {id(g): len(u) for g, u in zip(active, removed, strict=True)}
    reports = [
        GroupReport(
            name=g.name,
            kind=g.kind,
            units_before=g.units,
            units_after=g.units - cut_of.get(id(g), 0),
            writers=[w.name for w in g.writers],
            readers=[r.layer.name for r in g.readers],
            frozen=list(g.frozen),
        )
        for g in groups
    ]
    return StructuredResult(copy, reports, warnings)


def _chosen_units(
    active: list[Group], scores: list[np.ndarray], scorer: UnitScorer, config: PruneConfig
) -> list[np.ndarray]:
    """The units each active group loses: ``--structured-allocation`` (else the scorer's own)
    spreads the share over the groups, then ``--structured-multiple`` rounds what is kept."""
    allocation = config.structured_allocation
    choose = scorer.choose if allocation is None else UNIT_ALLOCATIONS[allocation]
    removed = choose(scores, config.structured)
    if config.structured_multiple > 1:
        removed = [
            round_kept(units, group_scores, config.structured_multiple, channels_per_unit(group))
            for group, group_scores, units in zip(active, scores, removed, strict=True)
        ]
    return removed


def channels_per_unit(group: Group) -> int:
    """How many channels of its writers' outputs one unit of ``group`` spans (1 for a neuron,
    the head size for an attention head, more for a coarsened group)."""
    blocks = [
        group.sites[node.output[0]].block
        for layer in group.writers
        for node in layer.nodes
        if node.output[0] in group.sites
    ]
    return min(blocks) if blocks else min(site.block for site in group.sites.values())


def round_kept(removed: np.ndarray, scores: np.ndarray, multiple: int, block: int) -> np.ndarray:
    """``--structured-multiple``: change the removed units of one group so that the kept
    channels (kept units x ``block`` channels each) are a multiple of ``multiple``: the kept
    count goes to the nearest allowed value (ties up), never below the group's keep floor; a
    group whose width cannot get there keeps all its units. Units move in score order: extra
    removals take the lowest-scoring kept units, restored ones are the highest-scoring removed.
    ``scores`` [units]; returns the removed unit indices, sorted."""
    units = len(scores)
    kept = units - len(removed)
    step = multiple // math.gcd(multiple, block)  # units per allowed width increment
    if step == 1 or kept == units:
        return removed
    target = step * math.floor(kept / step + 0.5)
    floor = keep_floor(units)
    if target < floor:
        target = step * math.ceil(floor / step)
    if target >= units:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(scores, kind="stable")  # lowest score first
    gone = np.zeros(units, dtype=bool)
    gone[removed] = True
    if target < kept:  # remove more: the lowest-scoring kept units
        extra = [u for u in order if not gone[u]][: kept - target]
        gone[extra] = True
    else:  # restore the highest-scoring removed units
        back = [u for u in order[::-1] if gone[u]][: target - kept]
        gone[back] = False
    return np.flatnonzero(gone).astype(np.int64)


def _writer_rows(active: list[Group], removed: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Weight name -> output rows (channels) each writer layer lost in the cut."""
    rows: dict[str, list[np.ndarray]] = {}
    for group, units in zip(active, removed, strict=True):
        for layer in group.writers:
            for node in layer.nodes:
                site = group.sites.get(node.output[0])
                if site is not None:
                    rows.setdefault(layer.weight_name, []).append(group.indices(site, units))
                    break
    return {name: np.unique(np.concatenate(parts)) for name, parts in rows.items()}


def _merge(
    changes: dict[str, ReaderChange],
    weight_name: str,
    columns: list[np.ndarray],
    delta: np.ndarray | None,
) -> None:
    """A reader may read several groups (a Concat of two branches): changes add up."""
    new_columns = np.concatenate(columns) if columns else np.zeros(0, dtype=np.int64)
    known = changes.get(weight_name)
    if known is None:
        changes[weight_name] = ReaderChange(new_columns, delta)
        return
    known.columns = np.concatenate([known.columns, new_columns])
    if delta is not None:
        known.delta = delta if known.delta is None else known.delta + delta


def _group_data(group: Group, stats: Mapping[str, LayerStats]) -> GroupData:
    every_unit = [np.array([u]) for u in range(group.units)]
    readers = []
    for reader in group.readers:
        layer = reader.layer
        moments = stats[layer.weight_name].inputs
        readers.append(
            ReaderData(
                matrix=layer.matrix(),
                mean=moments.mean[0],
                mean_square=moments.mean_square[0],
                columns=[
                    layer.op.input_columns(group.indices(reader.site, u), layer.shape)
                    for u in every_unit
                ],
            )
        )
    writers = []
    for layer in group.writers:
        site = next(group.sites[n.output[0]] for n in layer.nodes if n.output[0] in group.sites)
        writers.append(WriterData(layer.matrix(), [group.indices(site, u) for u in every_unit]))
    return GroupData(group.units, readers, writers)
