"""movierec: an orchestrated movie recommender (MovieLens + TMDB, Prefect, MLflow, LightFM)."""

__version__ = "0.1.0"
