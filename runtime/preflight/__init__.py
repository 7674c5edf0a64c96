"""Before the first step: the tokenizer, the tokenized data, the model's config and the numbers
that depend on the data (`prepare`); the identity of the inputs as they are now
(`input_fingerprints`); and what `sftc plan` shows of it all (`plan_report`, `plan_cache`)."""
