"""Business rules of the wedding platform: contexts, criticality, SLOs, calendar (pure)."""
