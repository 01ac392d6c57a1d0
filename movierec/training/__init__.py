"""Training stage: the protocol the settings describe (splits, features, bundling), the Optuna
study of the hybrid, and the evaluation of every candidate, tracked in MLflow."""
