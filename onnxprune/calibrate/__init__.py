"""Calibration: read data sources, augment the graph, stream batches, fold statistics."""
