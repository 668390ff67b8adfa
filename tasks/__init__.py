"""The stages of a fine-tune, one module each: ingest, split, train, evaluate, card, push."""
