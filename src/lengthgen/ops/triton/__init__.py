"""Triton kernels for what no installed library provides (importing needs triton): the Mamba-1
selective scan with an initial state (``selective_scan``), Mamba-2's SSD for one chunk from the
zero state (``ssd_one_chunk``)."""

from .selective_scan import DEFAULT_CONFIG, ScanConfig, selective_scan_triton

__all__ = ["selective_scan_triton", "ScanConfig", "DEFAULT_CONFIG"]
