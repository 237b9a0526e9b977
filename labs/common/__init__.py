"""Shared training utilities for the labs: config, data, checkpoint, distributed, metrics.

The labs run inside pods; they import only torch, numpy and the standard library (never the
course's `kubecourse` helpers), so a lab image needs nothing but PyTorch.
"""
