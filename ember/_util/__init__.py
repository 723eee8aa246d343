"""L0: standard-library helpers shared by every layer (errors, environment flags)."""
