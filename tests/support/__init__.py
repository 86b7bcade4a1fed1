"""Test helpers: database fixtures' building blocks, row factories, statement counting."""
