"""What every layer of the project shares: atomic file writes and the user-error types.

The bottom of the import graph: it imports nothing of the project (tests/test_imports.py).
"""
