"""Prefect flows composing the videorft stages into the pipeline DAG."""
