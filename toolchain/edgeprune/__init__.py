"""edgeprune: prune skip-units with MSPIC, quantize, and deploy to Jetson-class devices."""

__version__ = "0.1.0"

from edgeprune.errors import EdgepruneError

__all__ = ["EdgepruneError", "__version__"]
