"""What every domain shares to run: run limits and tags, the job and schedule factories, the instance
config, the job log, the HTTP API, the console, the dev server and the Celery runs."""
