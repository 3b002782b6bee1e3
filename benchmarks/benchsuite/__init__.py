"""The onnxprune benchmark suite (entry point: ``benchmarks/run_benchmarks.py``).

Modules by role:

- ``models``: the benchmark models' files, building them, sessions, this suite's own metric
  (``Evaluator``); ``plan``: what a run measures (grid rows, sizes; full or ``--quick``).
- Sections, one module each: ``quality`` (digits and MiniLM grid), ``mobile`` (the mobile
  CNN's grid), ``speed``, ``memory``; ``processes`` runs their fresh CLI / inference processes;
  ``machine`` records where a run happened.
- Records: ``records`` (each section's rows), ``results`` (a whole run, ``keep_sections``),
  ``codec`` (frozen records to and from the JSON of ``results.json``).
- Rendering from records: ``render`` (the document), ``render_quality``, ``render_resources``,
  ``tables`` (shared table pieces), ``prose`` (the explanatory paragraphs).
- ``main``: the command line.
"""
