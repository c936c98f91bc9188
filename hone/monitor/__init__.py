"""Run metrics: per-step JSON lines, a console table, optional W&B/TensorBoard sinks.

Knows metric dictionaries and files; knows nothing about models or environments.
"""

from hone.monitor.metrics import MetricsLog, StepPrinter

__all__ = ["MetricsLog", "StepPrinter"]
