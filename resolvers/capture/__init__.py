"""Reads of the capture domain: capture plans and proposals."""
