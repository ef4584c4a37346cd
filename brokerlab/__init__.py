"""brokerlab: the machinery the course's notebooks share.

Notebooks start with::

    import brokerlab as bl
    bl.require("redis")          # clear error + start command if Redis is down
    run = bl.run_name("lists")   # per-run names, so a second run never collides

Importing this package is cheap and needs only the standard library; the broker
client libraries are imported when first used.
"""
from .endpoints import Endpoints, current as endpoints
from .errors import BrokerUnavailable, StackError, WorkerTimeout
from .health import require, probe
from .runs import quick, run_name, scaled
from .workers import BoundedWorkers

__all__ = [
    "BoundedWorkers", "BrokerUnavailable", "Endpoints", "StackError", "WorkerTimeout", "endpoints",
    "probe", "quick", "require", "run_name", "scaled",
]
