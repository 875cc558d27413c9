# The ledger service image: `ledger serve` by default; `ledger project` for a projection worker.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Install the project (not editable): the packages land in site-packages.
WORKDIR /src
COPY pyproject.toml README.md ./
COPY domain ./domain
COPY commands ./commands
COPY projections ./projections
COPY read_api ./read_api
COPY infrastructure ./infrastructure
RUN pip install . && rm -rf build ./*.egg-info

# Run as an unprivileged user, outside the source tree.
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin ledger
USER ledger
WORKDIR /home/ledger
# Only used when LEDGER_DATABASE_URL is unset (embedded PostgreSQL).
ENV LEDGER_STATE_DIR=/home/ledger/.ledger

EXPOSE 8000
CMD ["ledger", "serve", "--host", "0.0.0.0", "--port", "8000"]
