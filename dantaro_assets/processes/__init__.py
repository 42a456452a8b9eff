"""The processes Dantaro runs on a host: ``dantaro dev`` and its console, the stream beside it, the Dagster
instance they share, and how ``dantaro stop`` finds and stops what they left."""
