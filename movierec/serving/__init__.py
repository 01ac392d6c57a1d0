"""Serving stage: the API and page (app, request schemas, the champion holder, Prometheus
metrics, static files) and the batch export."""
