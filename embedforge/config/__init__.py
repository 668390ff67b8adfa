"""The recipe's sections, one typed config each, with their defaults (the recipe composes them)."""
