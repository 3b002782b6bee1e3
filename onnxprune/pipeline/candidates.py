"""Candidates: written into a copy of the model, or judged in memory (one session whose
weights are inputs, or the graph downstream of one layer)."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

import numpy as np
import onnx

from ..boundary import BOUNDARY_CACHE_BYTES, BoundaryCache
from ..calibrate.stats import LayerStats
from ..config import PruneConfig
from ..evaluate import CandidateEvaluator
from ..graph import GraphView
from ..layers import find_layers
from ..metric import decision_score
from ..report import LayerReport
from ..scoring import ScoringMethod
from ..session import movable, session_in_memory
from ..suffix import GraphIndex, SuffixEvaluator, suffix_cut, suffix_windows
from ..verify import ReferenceRun
from .base import (
    Candidate,
    LayerPlan,
    PrunedLayers,
)
from .matrices import (
    write_matrices,
)
from .references import References

log = logging.getLogger(__name__)


class Candidates(References):
    def _write(
        self,
        model: onnx.ModelProto,
        config: PruneConfig,
        plans: list[LayerPlan],
        finals: list[np.ndarray],
        deltas: list[np.ndarray | None],
        stats: Mapping[str, LayerStats],
    ) -> tuple[list[LayerReport], list[str]]:
        """Write pruned matrices and bias changes into ``model`` (in place)."""
        view = GraphView(model)
        layers = find_layers(view, config).layers  # same order, nodes of ``model``
        # Layers inside If branches come last in self.layers (onnxprune.branches).
        main = len(layers)
        assert [layer.weight_name for layer in layers] == [
            x.weight_name for x in self.layers[:main]
        ]
        outer = [k for k, plan in enumerate(plans) if plan.index < main]
        reports, warnings = write_matrices(
            view,
            [layers[plans[k].index] for k in outer],
            [finals[k] for k in outer],
            [deltas[k] for k in outer],
            [stats[layers[plans[k].index].weight_name] for k in outer],
        )
        if len(outer) == len(plans):
            return reports, warnings
        inner = [k for k in range(len(plans)) if plans[k].index >= main]
        items = [(self.layers[plans[k].index], finals[k], deltas[k]) for k in inner]
        inner_reports, inner_warnings = self.branches.write(
            model, [(x, f, d, stats[x.weight_name]) for x, f, d in items]
        )
        by_plan = dict(zip(outer, reports, strict=True)) | dict(
            zip(inner, inner_reports, strict=True)
        )
        return [by_plan[k] for k in range(len(plans))], warnings + inner_warnings

    def _prepare(
        self, config: PruneConfig, scorer: ScoringMethod, group: str, only: set[str] | None
    ) -> PrunedLayers:
        """Decide and prune every chosen layer (``only``: these weight names), nothing written."""
        chosen = [
            i for i, layer in enumerate(self.layers) if only is None or layer.weight_name in only
        ]
        plans, notes = self._decide(config, scorer, group, chosen)
        finals, deltas, warnings, removed = self._prune_layers(config, plans, self.statistics())
        return PrunedLayers(plans, finals, deltas, notes, warnings, removed, dict(self._latest))

    def _judge(
        self,
        config: PruneConfig,
        scorer: ScoringMethod,
        group: str,
        reference: ReferenceRun,
        only: set[str] | None = None,
    ) -> tuple[float, PrunedLayers | None]:
        """(score, the pruned layers) of the candidate ``_build`` would make: mean output
        cosine on ``reference``'s samples, judged in memory when the model allows it
        (``CandidateEvaluator``; otherwise built and written, and no pruned layers returned).
        ``_build`` takes the pruned layers back instead of computing them again."""
        # The original's outputs first, its session dropped before the candidate's is built
        # (the two sessions' activations were alive together in the first comparison).
        reference.run_original()
        if only is None and self.base_dir is None and self._builds_whole_candidates():
            prepared = self._prepare(config, scorer, group, only)
            model = onnx.ModelProto()
            model.CopyFrom(self.proto)
            self._write(
                model, config, prepared.plans, prepared.finals, prepared.deltas, self.statistics()
            )
            clock = time.perf_counter()
            session = session_in_memory(model, consume=True, spin=False)
            del model
            fidelity = reference.compare_session(session)
            del session
            self.phase_seconds["judge"] += time.perf_counter() - clock
            return decision_score(fidelity), prepared
        evaluator = self.evaluator(only, reference)
        if evaluator is None:
            candidate = self._build(config, scorer, group, only)
            return decision_score(self.compare(candidate, reference)), None
        prepared = self._prepare(config, scorer, group, only)
        weights = {
            plan.index: self.layers[plan.index].from_matrix(final)
            for plan, final in zip(prepared.plans, prepared.finals, strict=True)
        }
        changes = {p.index: d for p, d in zip(prepared.plans, prepared.deltas, strict=True)}
        clock = time.perf_counter()
        fidelity = evaluator.compare(weights, changes, reference)
        seconds = time.perf_counter() - clock
        self.phase_seconds["judge"] += seconds
        if only is not None and len(only) == 1 and not isinstance(evaluator, SuffixEvaluator):
            self._judge_seconds[evaluator is self._evaluator].append(seconds)
        return decision_score(fidelity), prepared

    def _builds_whole_candidates(self) -> bool:
        """Whether a candidate that changes every layer is judged as a written model (its
        own session) rather than in the shared evaluator: for models with Conv layers, whose
        constant weights onnxruntime pre-packs into its blocked layout. Fed as inputs they are
        not: EfficientNet-Lite0 ran 3-4x slower in the shared session than as a model, which
        costs more than writing and loading the model; MatMul models run at about the same
        speed either way, and skip the write."""
        return any(layer.op.stats_kind == "conv" for layer in self.layers)

    def evaluator(
        self, only: set[str] | None = None, reference: ReferenceRun | None = None
    ) -> CandidateEvaluator | SuffixEvaluator | None:
        """The in-memory candidate evaluator for a candidate that changes the layers ``only``
        (None: all): the run's shared one (every layer's weight an input, built on first use)
        or, for a single-layer candidate, one over the graph downstream of that layer
        (``_suffix_evaluator``; when the boundary values do not fit, one whose only input is
        that layer once measured cheaper, ``_single_layer_evaluator``). None in big-model mode
        or when a layer sits inside a subgraph."""
        if self.base_dir is not None or self._evaluator is False:
            return None
        if only is not None and len(only) == 1 and reference is not None:
            suffix = self._suffix_evaluator(next(iter(only)), reference)
            if suffix is not None:
                return suffix
        if self._evaluator is None:
            try:
                self._evaluator = CandidateEvaluator(
                    self.proto, dict(enumerate(self.layers)), self.arrays()
                )
            except ValueError:
                self._evaluator = False
                return None
        assert isinstance(self._evaluator, CandidateEvaluator)
        if only is not None and len(only) == 1:
            own = self._single_layer_evaluator(next(iter(only)))
            if own is not None:
                return own
        return self._evaluator

    def _suffix_evaluator(
        self, weight_name: str, reference: ReferenceRun
    ) -> SuffixEvaluator | None:
        """The session over the graph downstream of this layer and the others of its window
        (``onnxprune.suffix``), one at a time; None when the suffix cannot be cut or its
        boundary values on ``reference``'s samples alone exceed ``BOUNDARY_CACHE_BYTES``."""
        if self._cuts is None:
            self._cut_windows()
        assert self._cuts is not None
        if self._boundary is None:
            self._boundary = BoundaryCache(
                self.proto, self._cuts, BOUNDARY_CACHE_BYTES, self.arrays()
            )
        index = next(i for i, x in enumerate(self.layers) if x.weight_name == weight_name)
        cut, window = self._cuts[index], self._windows[index]
        if cut is None or not self._boundary.ensure(reference, index):
            return None
        if self._suffix is not None and self._suffix[0] == window:
            return self._suffix[1]
        self._suffix = None  # one suffix session at a time
        layers = {i: self.layers[i] for i in window}
        evaluator = SuffixEvaluator(
            self.proto, layers, cut, self._boundary, reference, self.arrays()
        )
        self._suffix = (window, evaluator)
        return evaluator

    def _cut_windows(self) -> None:
        """Each layer's window (``suffix_windows``) and the window's cut; a window that
        cannot be cut as a whole is split into its layers."""
        self._cuts, self._windows = [None] * len(self.layers), {}
        index = GraphIndex.of(self.proto)  # the same for every cut
        for window in suffix_windows(self.layers):
            cut = suffix_cut(self.proto, [self.layers[i] for i in window], index)
            parts = [(window, cut)]
            if cut is None and len(window) > 1:
                parts = [((i,), suffix_cut(self.proto, [self.layers[i]], index)) for i in window]
            for part, part_cut in parts:
                for i in part:
                    self._cuts[i], self._windows[i] = part_cut, part

    def suffix_run_shares(self, chosen: list[int]) -> list[float]:
        """For each chosen layer, what judging a candidate that changes it alone costs, as a
        share of one run of the whole model: the multiply-adds of the layers its suffix
        session runs (its window's cut), over those of all layers. A layer's multiply-adds
        per calibration set are its size times the input positions its statistics counted
        (tokens, or output pixels for a conv). 1.0 where the whole model runs: no cut (a
        subgraph downstream) or big-model mode (every candidate is written and loaded)."""
        if self.base_dir is not None:
            return [1.0] * len(chosen)
        if self._cuts is None:
            self._cut_windows()
        assert self._cuts is not None
        stats = self.statistics()
        position = {id(node): k for k, node in enumerate(self.proto.graph.node)}
        macs = []
        for layer in self.layers:
            layer_stats = stats.get(layer.weight_name)
            macs.append(layer.size * (layer_stats.inputs.count if layer_stats else 0))
        starts = [position.get(id(layer.nodes[0]), -1) for layer in self.layers]
        total = sum(macs)
        shares = []
        for i in chosen:
            cut = self._cuts[i]
            if cut is None or total <= 0:
                shares.append(1.0)
                continue
            inside = set(cut.positions)
            shares.append(
                sum(m for m, start in zip(macs, starts, strict=True) if start in inside) / total
            )
        return shares

    def release_single_layer_sessions(self) -> None:
        """Drop the suffix session, its boundary values and the per-layer session once the
        single-layer candidates are judged: the whole-model candidate judged next would
        otherwise hold its session on top of them (EfficientNet-Lite0's peak RSS). The cuts
        stay; a later sensitivity measurement (another sparsity of a sweep) rebuilds the
        rest."""
        self._suffix = None
        self._boundary = None
        self._own_evaluator = None

    def arrays(self) -> dict[str, np.ndarray]:
        """The values of the model's large initializers (``session.movable``), read once:
        in-memory sessions take them without serializing the model."""
        if self._arrays is None:
            # A layer read straight from its initializer already holds that value: shared,
            # not read a second time (MiniLM's layers: 40 MB).
            held = {
                x.weight_name: x.value
                for x in self.layers
                if x.value is not None and not x.views and x.storage == "initializer"
            }
            self._arrays = {}
            for tensor in self.proto.graph.initializer:
                if movable(tensor):
                    value = held.get(tensor.name)
                    if value is None or value.shape != tuple(tensor.dims):
                        value = onnx.numpy_helper.to_array(tensor)
                    self._arrays[tensor.name] = value
        return self._arrays

    def _single_layer_evaluator(self, weight_name: str) -> CandidateEvaluator | None:
        """A session where only this layer's weight is an input: the other layers keep
        constant weights, which onnxruntime pre-packs (Conv in its blocked layout), so a
        conv model runs 2-3x faster than in the shared session, for the price of building a
        session per layer. Used once the first layer's judged candidates, one in each kind of
        session, show it cheaper (each layer is judged at most twice)."""
        if self._own_evaluator is not None and self._own_evaluator[0] == weight_name:
            return self._own_evaluator[1]
        shared, own = self._judge_seconds[True], self._judge_seconds[False]
        if shared and own:
            setup = self._own_setup_seconds
            if setup + 2 * min(own) >= 2 * min(shared):
                return None  # the shared session is cheaper for this model
        elif not shared:
            return None  # measure the shared session first
        index = next(i for i, x in enumerate(self.layers) if x.weight_name == weight_name)
        self._own_evaluator = None  # one per-layer session at a time
        evaluator = CandidateEvaluator(self.proto, {index: self.layers[index]})
        self._own_setup_seconds = evaluator.setup_seconds
        self._own_evaluator = (weight_name, evaluator)
        return evaluator

    def _build(
        self,
        config: PruneConfig,
        scorer: ScoringMethod,
        group: str,
        only: set[str] | None,
        prepared: PrunedLayers | None = None,
    ) -> Candidate:
        """A pruned copy of the model (``prepared``: the pruned layers ``_judge`` made for the
        same arguments)."""
        if prepared is None:
            prepared = self._prepare(config, scorer, group, only)
        model = onnx.ModelProto()
        model.CopyFrom(self.proto)
        reports, written = self._write(
            model, config, prepared.plans, prepared.finals, prepared.deltas, self.statistics()
        )
        warnings = prepared.notes + prepared.warnings + written
        candidate = Candidate(model, config.target_sparsity, scorer, group, reports, warnings)
        candidate.removed = prepared.removed
        candidate.notes = prepared.notes
        candidate.allocation = config.allocation_mode
        return candidate
