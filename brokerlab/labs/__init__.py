"""Lab machinery: building exercises from solutions (build), the checks' API with progressive hints
(checking), fault injection (faults), and the catalogue-of-wrong-implementations harness (catalogue).
Each lab's checks live in its own module (orientation_lab, redis_lab, kafka_lab, ...)."""
from .checking import Lab, LabCheckFailed, call, check, decided, expect, passed

__all__ = ["Lab", "LabCheckFailed", "call", "check", "decided", "expect", "passed"]
