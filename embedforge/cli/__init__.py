"""The `embedforge` command line and its helpers: the temporary server, pre-run checks, the recipe reference."""
