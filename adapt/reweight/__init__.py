"""Importance re-weighting estimators."""
