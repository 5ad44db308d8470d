"""Training the bundled model and its SAEs: corpus, tokenizer, LM, dictionaries, report."""
