"""embedforge: fine-tune sentence-transformers embedding models as Prefect 3 deployments."""
