"""Learning from production: the completions a model served, and the feedback they got (issue 17)."""

from hone.traffic.log import (
    DEFAULT_LABELS,
    LOCAL_TENANT,
    Feedback,
    LoggedCompletion,
    ServedChoice,
    ServedCompletion,
    TrafficLog,
    TrafficSettings,
    UNLOGGED_HEADERS,
    logged_completion,
)

__all__ = ["DEFAULT_LABELS", "LOCAL_TENANT", "Feedback", "LoggedCompletion", "ServedChoice", "ServedCompletion", "TrafficLog", "TrafficSettings", "UNLOGGED_HEADERS", "logged_completion"]
