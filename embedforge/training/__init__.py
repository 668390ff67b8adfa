"""What only training uses: the trainer a recipe describes, progress, tracking, adapters, Ctrl-C, torchrun."""
