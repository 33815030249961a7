"""Prefect tasks: each wraps one pipeline stage (videorft.stages) run through DVC."""
