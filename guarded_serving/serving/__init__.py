"""Serving integrations (BentoML)."""
