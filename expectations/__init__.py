"""Great Expectations suites (1.x JSON) for the raw and canonical tables: package data, shipped
with an install and read through `importlib.resources` (`movierec.data.validation.suite_path`)."""
