-- The databases of the stack besides mlflow (POSTGRES_DB), as `movierec stack up` creates them.
CREATE DATABASE prefect OWNER movierec;
CREATE DATABASE optuna OWNER movierec;
