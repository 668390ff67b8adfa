"""Prefect set-up: deployments, automations, events, and the commands that talk to the operator's server."""
