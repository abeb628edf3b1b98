"""Efficacy harness, label-free method choice and transferability ranking."""
