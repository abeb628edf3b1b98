"""Procedural, deterministic benchmark generators."""
