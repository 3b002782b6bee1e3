"""The options that decide what is pruned: the model, its calibration data, the method, the
structure, and the metric decisions optimise (in --help order within each heading)."""

from __future__ import annotations

from .schema import (
    ALLOCATIONS,
    CAL_SECTION,
    CALIB_HELP,
    CONFIG,
    FLAG,
    GATES_SECTION,
    GROUPS,
    INT,
    METHOD_SECTION,
    NUMBER,
    PATH,
    REQUIRED,
    RUN,
    SOURCE,
    SPEC,
    STRUCT_SECTION,
    TEXT,
    TEXTS,
    UPDATE_TARGETS,
    Option,
    Range,
    method_names,
    unit_allocation_names,
    unit_scorer_names,
)

PRUNING: tuple[Option, ...] = (
    Option(
        "calib", SOURCE, None, CALIB_HELP + " Required unless --method magnitude with --eval.",
        RUN, "Basics", optional=True,
    ),
    Option(
        "model_file", TEXT, None,
        "MODEL is a directory with several .onnx files: prune this one (relative path).",
        RUN, "Basics", optional=True, cli={"metavar": "NAME"},
    ),
    Option(
        "tokenizer", PATH, None,
        "Text calibration: a tokenizer.json (or its directory); default: beside the model.",
        RUN, CAL_SECTION, optional=True,
    ),
    Option(
        "max_length", INT, 128, "Text calibration: truncate sequences to this many tokens.",
        RUN, CAL_SECTION, range=Range(1), cli={"type": "int>=1"},
    ),
    Option(
        "preprocess", SPEC, None,
        "Image calibration (--calib a folder of images): size, resize, mean/std or "
        "scale/offset, channels, layout, dtype, as a JSON file or inline JSON (see README).",
        RUN, CAL_SECTION, optional=True, cli={"metavar": "SPEC.json|JSON"},
    ),
    Option(
        # prune() also takes "auto" or None (see ``run.request``); PruneConfig holds the number.
        "sparsity", NUMBER, None,
        "Share of the prunable weights to remove, in [0, 1), over all pruned layers; or "
        "'auto' with a gate: the highest sparsity that passes it. Required unless --pattern "
        "N:M or --recipe fixes it.",
        CONFIG, "Basics", range=Range(0.0, 1.0), cli={"type": str}, recipe_absent=REQUIRED,
    ),
    Option(
        "output", PATH, None,
        "Output model (default: <model>.pruned.onnx). Never the input.",
        RUN, "Basics", optional=True, flags=("-o", "--output"),
    ),
    Option(
        "method", TEXT, "contrib", "Scoring method.", CONFIG, METHOD_SECTION,
        choices=method_names,
    ),
    Option(
        "pattern", TEXT, "unstructured",
        "'unstructured', or N:M such as 2:4 / 4:8 along the reduction axis.",
        CONFIG, STRUCT_SECTION,
    ),
    Option(
        "group", TEXT, None,
        "Where weights compete: per output row, per layer, over all layers, or auto (try "
        "row and global, keep the one closer to the original). Default: the method's own.",
        CONFIG, METHOD_SECTION, optional=True, choices=GROUPS,
    ),
    Option(
        "exclude", TEXTS, (), "Leave layers whose node or weight name matches (repeatable).",
        CONFIG, STRUCT_SECTION, cli={"metavar": "REGEX"},
    ),
    Option(
        "layer_overrides", TEXTS, (),
        "Per-layer override for layers whose node or weight name matches REGEX (repeatable, "
        "first match wins). SPEC: 'skip' (like --exclude), S (exactly this sparsity) or "
        "S:METHOD (also scored by METHOD). The other layers share the rest of --sparsity.",
        CONFIG, STRUCT_SECTION, flags=("--layer",), cli={"metavar": "REGEX=SPEC"},
    ),
    Option(
        "sequential", FLAG, False,
        "Calibrate and prune in topological stages: each stage's statistics come from the "
        "model already pruned upstream (one extra calibration pass per stage).",
        CONFIG, METHOD_SECTION,
    ),
    Option(
        "stages", INT, 8,
        "--sequential: at most this many stages (consecutive depths are merged); 0: one "
        "stage per layer depth.",
        CONFIG, METHOD_SECTION, range=Range(0),
    ),
    Option(
        "update_target", TEXT, "pruned",
        "Advanced, --sequential with --update (or sparsegpt): each stage's update fits the "
        "layer's outputs on the pruned upstream's inputs (pruned) or the dense model's outputs "
        "on the same samples (dense; each stage pass also runs the dense model).",
        CONFIG, METHOD_SECTION, choices=UPDATE_TARGETS, recipe_sparse=True,
    ),
    Option(
        "allocation", TEXT, None,
        "How the sparsity budget is shared between layers. group: as --group selects. "
        "sensitivity: each layer is pruned alone at its share and at the highest of 5 "
        "sparsities around it, the loss of output score judged on the first 4-16 calibration "
        "samples (about 8k output values), "
        "the others interpolated along the layer's local error; the budget goes where it hurts "
        "least. measured: every one of the 5 sparsities judged on 64 samples (about 10x the "
        "cost). Default: the method's own (contrib: sensitivity; the other methods: group).",
        CONFIG, METHOD_SECTION, optional=True, choices=ALLOCATIONS,
    ),
    Option(
        "thorough", FLAG, False,
        "Spend more time for a little more fidelity: --group auto also tries the method's "
        "registered variants (contrib: without the mean folded into the bias), one more "
        "whole-model trial each, and --allocation sensitivity judges every layer rather than "
        "as many as two passes over the calibration samples pay for. Measured cost and gain: "
        "README 'What a run costs'. Default: off.",
        CONFIG, METHOD_SECTION, recipe_sparse=True,
    ),
    Option(
        "min_row_weights", INT, 8,
        "Every neuron/filter keeps at least this many weights (tiny layers such as "
        "depthwise 3x3 or a stem conv stay dense); other layers give more. 0: off.",
        CONFIG, METHOD_SECTION, range=Range(0),
    ),
    Option(
        "update", FLAG, None,
        "Re-fit each layer's remaining weights to its calibration outputs (SparseGPT-style "
        "reconstruction; gathers a K x K input correlation per layer). Default: the method's "
        "own (contrib: on; the other methods: off, as published).",
        CONFIG, METHOD_SECTION, optional=True, flags=("--update/--no-update",),
    ),
    Option(
        "stat_correction", FLAG, None,
        "After pruning, scale each output channel's weights and shift its bias so its mean "
        "and variance over the calibration inputs are the dense layer's (gathers the K x K "
        "input correlation, as --update). Default: off (it loses on EfficientNet-Lite0; "
        "BENCHMARKS.md, post-pruning repairs).",
        CONFIG, METHOD_SECTION, optional=True, flags=("--stat-correction/--no-stat-correction",),
        # Recipes written before the option existed were pruned without it.
        recipe_absent=False, recipe_sparse=True,
    ),
    Option(
        "refit_steps", INT, 0,
        "With --update: this many conjugate-gradient steps on each layer's least-squares "
        "objective (centred inputs) over the kept weights after the update; each step costs "
        "about one out x K x K product per layer and candidate. 0: off.",
        CONFIG, METHOD_SECTION, range=Range(0), recipe_sparse=True,
    ),
    Option(
        "reselect_mask", FLAG, False,
        "With --update: choose the method's mask again block by block (N:M: group by group) "
        "on the updated weights with the OBS saliency w^2 / [H^-1]_jj, every row removing as "
        "many weights per block as the method's mask does. Default: off.",
        CONFIG, METHOD_SECTION, flags=("--reselect-mask/--no-reselect-mask",), recipe_sparse=True,
    ),
    Option(
        "refit_final", INT, 0,
        "With --update: this many conjugate-gradient steps on each layer's least-squares "
        "objective over the kept weights, once, on the chosen model (every decision is made on "
        "the plain update; cheaper and safer than --refit-steps). 0: off.",
        CONFIG, METHOD_SECTION, range=Range(0), recipe_sparse=True,
    ),
    Option(
        "sample_mask", TEXT, None,
        "Input [batch, seq] whose zeros mark padding, so statistics count real tokens only "
        "(default: an input named attention_mask, if any; 'none' turns it off).",
        CONFIG, CAL_SECTION, optional=True, cli={"metavar": "INPUT|none"},
    ),
    Option(
        "structured", NUMBER, 0.0,
        "Remove this share of the hidden units (MLP neurons, Conv channels, attention heads) "
        "so that tensors really shrink; combines with --sparsity (shrink first, then prune "
        "what is left).",
        CONFIG, STRUCT_SECTION, range=Range(0.0, 1.0), cli={"metavar": "R"},
    ),
    Option(
        "structured_score", TEXT, "variance",
        "How --structured ranks units: variance (output variance x reader weight norm, "
        "mean-compensated) or l1 (weight L1 norm, the usual baseline).",
        CONFIG, STRUCT_SECTION, choices=unit_scorer_names,
    ),
    Option(
        "structured_allocation", TEXT, None,
        "How --structured spreads the removed share over the groups: share (units ranked by "
        "their share of their group's score, one threshold: narrow layers and attention heads "
        "mostly stay; the default with variance) or uniform (the same share from every group, "
        "heads included: faster, less faithful; the default with l1).",
        CONFIG, STRUCT_SECTION, optional=True, choices=unit_allocation_names,
    ),
    Option(
        "structured_multiple", INT, 1,
        "With --structured: round each group's kept channels to a multiple of N (8 or 16 "
        "keep int8 / fp16 kernels on their fast path); 1 keeps exactly the share asked for.",
        CONFIG, STRUCT_SECTION, range=Range(1, 1024, high_closed=True), cli={"metavar": "N"},
    ),
    Option(
        "num_samples", INT, None, "Use at most N calibration samples.",
        CONFIG, CAL_SECTION, optional=True, range=Range(1),
    ),
    Option(
        "batch_size", INT, 32, "Samples per onnxruntime batch.", CONFIG, CAL_SECTION,
        range=Range(1),
    ),
    Option(
        "eval_data", SOURCE, None,
        "Evaluation data (same formats, optional 'labels'); default: hold out part of the "
        "calibration set.",
        RUN, CAL_SECTION, optional=True, flags=("--eval",),
    ),
    Option(
        "metric", TEXT, "standardized",
        "What fidelity means: the score --group auto, --allocation sensitivity and "
        "--sparsity auto optimise and --min-score gates. Kinds: standardized (each output "
        "feature scaled by the original's spread), cosine, pooled, top1, top5, topK, "
        "agreement, cells[@T]; presets: classifier, detector, encoder (README 'Choosing the "
        "metric').",
        CONFIG, GATES_SECTION, cli={"metavar": "KIND|PRESET"},
    ),
    Option(
        "metric_outputs", TEXTS, (),
        "Score only this output or part of it (repeatable), e.g. 'output0[:,4:]=cells'; "
        "without =KIND, the --metric kind.",
        CONFIG, GATES_SECTION, flags=("--metric-output",), cli={"metavar": "NAME[SLICE][=KIND]"},
    ),
)  # fmt: skip
