"""The ``edge-gateway`` command line."""
