"""Scoring over HTTP: image decoding with limits, micro-batching, and the ASGI app behind ``metricad serve``."""

from metricad.serve.app import ServiceLimits, create_app
from metricad.serve.batching import MicroBatcher
from metricad.serve.decode import BadImage, ImageTooLarge, decode_image

__all__ = ["BadImage", "ImageTooLarge", "MicroBatcher", "ServiceLimits", "create_app", "decode_image"]
