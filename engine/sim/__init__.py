"""A seeded, deterministic simulator of Raft cores (no threads, no clocks): virtual time in
ticks, an adversarial network (drop, duplicate, reorder, partitions), slow disks, crashes and
restarts, snapshots, disk faults that lose durable entries — with Raft's safety properties
checked after every action.

A failing seed is a one-line reproduction: ``python -m engine.sim --seed 1234``.
"""

from engine.sim.checkers import SafetyChecker, SafetyViolation
from engine.sim.disk import DurableState
from engine.sim.simulator import Params, Sim, run_schedule

__all__ = ["DurableState", "Params", "SafetyChecker", "SafetyViolation", "Sim", "run_schedule"]
