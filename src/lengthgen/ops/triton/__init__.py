"""Triton kernels for recurrences no installed library provides (importing needs triton)."""

from .selective_scan import DEFAULT_CONFIG, ScanConfig, selective_scan_triton

__all__ = ["selective_scan_triton", "ScanConfig", "DEFAULT_CONFIG"]
