"""The cascaded pseudo-label generator (paper §3.1–3.3): backbones, MVAM, PMPS, the cascade."""
