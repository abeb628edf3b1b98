"""Adaptation methods behind one interface."""
