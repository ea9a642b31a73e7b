"""Running deployments on one machine (local Prefect server + serve)."""
