"""Live views of what the brokers do.  Each view's state is a plain model (a dict),
refreshed from the real broker by a bounded loop; ipywidgets shows it live in
JupyterLab, and a text rendering stands in where no front end is attached."""
from .base import LiveView
from .stack import StackView

# the broker-specific views import their client libraries, so they are imported from their modules:
#   from brokerlab.views.redis import QueueView, StreamView
#   from brokerlab.views.kafka import OffsetsView
#   from brokerlab.views.trace import OrderEffectsView, OrderTrace   (notebook 08b)
__all__ = ["LiveView", "StackView"]
