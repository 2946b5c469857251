"""Finished research, kept as a record: each subpackage is a study with its code, results and README."""
