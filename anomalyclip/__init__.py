"""AnomalyCLIP: weakly supervised video anomaly detection and recognition on CLIP features."""

__version__ = "0.1.0"
