"""Training: data pipeline, the resumable training loop and weight export."""
