"""`type: record` sink and `edge-gateway record`: samples to CSV or Parquet files, and reading them back."""
