"""Run-a-job functions: each trains, prunes or searches and writes a run directory (one call per CLI command)."""
