"""The served model's runtime: `inference.model`, one self-contained file that the registered
MLflow model runs verbatim, and the one home of top-k selection and factor scoring."""
