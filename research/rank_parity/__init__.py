"""STR vs fixed-rank parity study (issue 13): a plain-PyTorch harness, a sweep driver and a report."""
