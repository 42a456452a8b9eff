"""Offline Upbit quotation API (simulated or recorded market) for tests, the offline demo and benchmarks."""
