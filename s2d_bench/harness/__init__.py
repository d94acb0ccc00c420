"""Generation, avg@k evaluation and result records."""
