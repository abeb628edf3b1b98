"""The one training loop and its parts: config, sampling, checkpoints, inference, distributed, data."""
