"""Augmentation presets, target-aware restyling and shift ranking."""
