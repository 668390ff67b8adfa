"""The fine-tuning flow, its recipe, its deployments and the embedforge CLI."""
