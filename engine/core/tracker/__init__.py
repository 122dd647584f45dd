"""Per-follower replication progress (state, window of appends in flight)."""

from engine.core.tracker.inflights import Inflights
from engine.core.tracker.progress import Progress
from engine.core.tracker.state import ProgressState

__all__ = ["Inflights", "Progress", "ProgressState"]
