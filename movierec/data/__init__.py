"""Data stage: dataset sources and parsers, preprocessing, TMDB, synthetic data, validation,
Parquet snapshots, the feature store and the feedback store."""
