"""Tests per plug-in, mirroring connectors/: unit/ without servers, integration/ against real ones."""
