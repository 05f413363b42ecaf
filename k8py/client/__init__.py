"""Async Kubernetes client: HTTP and in-process transports, informers, work queue.

Empty until the control-loop work lands.
"""
