"""The pipeline's tools, each in one module: MLflow (tracking), DVC (versioning), Great Expectations (validation)."""
