"""Migrations of the example site (only the demo user)."""
