"""Lab machinery: building exercises from solutions, and the checks that grade them
against the real brokers (behaviour, never the text of the code)."""
from .checking import LabCheckFailed, check, passed

__all__ = ["LabCheckFailed", "check", "passed"]
