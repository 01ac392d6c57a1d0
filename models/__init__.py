"""Recommender models (issue 3): pure fit/recommend functions on sparse matrices."""
