"""Reusable pieces with no knowledge of Dantaro's assets: storage, Upbit access, checks."""
