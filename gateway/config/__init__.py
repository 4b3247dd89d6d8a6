"""Typed configuration: shared building blocks (``base``), the root model and loader (``loader``)."""
