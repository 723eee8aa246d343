"""Test support: the op test table and gradient checkers. Imported by tests only."""
