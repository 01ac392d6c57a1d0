"""Feature building (issue 3): pure functions from canonical tables to model inputs."""
