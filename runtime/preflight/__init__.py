"""What a run will do before it runs: `sftc plan`'s report and its cache, `sftc bench`'s
throughput of the real train step."""
