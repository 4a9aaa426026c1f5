# One image for every SQAL Python service (analyzer, ingest, simulator, migrations, reports);
# compose.yaml picks the command. Entry point: the `sqal` CLI.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MPLCONFIGDIR=/tmp/matplotlib

WORKDIR /app
COPY pyproject.toml README.md constraints.txt ./
COPY sqal ./sqal
COPY app ./app
COPY broker ./broker
COPY embedded ./embedded
COPY views ./views
COPY device_sim ./device_sim
COPY analyzer ./analyzer
COPY ingest ./ingest
COPY storage ./storage
COPY capture ./capture
COPY profiles ./profiles

# compat editable install, as scripts/setup.sh does: the package runs from /app, so the SQL
# migrations (storage/migrations/*.sql) and profiles/ are found where the code expects them.
# constraints.txt pins every dependency to the versions the tests ran with (as setup.sh does).
# /app stays root's: the services write nothing there. /reports is sqal's, for `sqal report`
# (compose mounts the "reports" volume there, which takes this owner when first created).
RUN pip install -c constraints.txt --config-settings editable_mode=compat -e . \
    && useradd --system --uid 10001 --home-dir /app sqal \
    && install -d -o sqal -g sqal -m 0750 /reports

USER sqal
ENTRYPOINT ["sqal"]
CMD ["--help"]
