"""Composition root: settings, the Starlette app, the embedded database, the `gwm` command line.

Nothing imports this package; it imports and wires everything else.
"""
