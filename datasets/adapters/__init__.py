"""Turn public datasets on disk into manifests."""
