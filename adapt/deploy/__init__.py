"""After training: model files, the predictor, recorded preprocessing, monitoring."""
