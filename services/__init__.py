"""Example services guarded by guarded-serving."""
