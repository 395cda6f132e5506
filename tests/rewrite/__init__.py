"""Rewrite engine tests."""
