"""Pre-run checks, one module per recipe section: what would stop a run, found before it starts."""
