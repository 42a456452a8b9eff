"""The Dantaro API: the latest snapshots, the scorecard and ``/worker/status``, above every domain it serves."""
