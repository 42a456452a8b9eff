"""Webhooks for traders and operators: events read from what the pipeline stored, queued and delivered by sensors."""
