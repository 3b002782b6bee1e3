"""The stages of one ``prune()`` run, each a small module with a typed hand-off.

``request`` (options -> :class:`~onnxprune.run.request.Request`: checked settings, data and
paths) -> ``calibration`` (load the model, shrink with --structured, gather statistics) ->
``planning`` (build the candidate: --sparsity auto ``search``, --sweep, or one build; candidates
are judged by ``evaluation``) -> ``writing`` (stage the model file and the --quantize /
--storage artifact) -> ``verification`` (fidelity and gates) -> ``reporting`` (the report's
counts and the recipe) -> ``writing.publish_run``. ``onnxprune.api.prune`` calls them in that
order; ``pipeline.Pruner`` does the heavy lifting inside them.
"""
