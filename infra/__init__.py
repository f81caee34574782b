"""Adapters for the domain's ports (in-memory, Redis), logging and settings."""
