"""The device application and its tools: the ``fr-edge`` command line (``cli``), the
runner that assembles engine, client, sync and telemetry (``runner``), ``doctor``, the demo,
the plugin scaffold, the preview window and the Prometheus metrics.
"""
