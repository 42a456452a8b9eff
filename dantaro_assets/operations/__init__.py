"""Run machinery every domain shares: run limits, tags and the executor, the job and schedule factories, Celery runs."""
