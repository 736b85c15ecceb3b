# restock-service: the HTTP API on port 8000.
# Before the first start, migrate:  docker run --rm -v restock-data:/data IMAGE restock-service migrate
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

RUN useradd --system --user-group --uid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin restock \
 && mkdir /data \
 && chown restock:restock /data

# A regular (non-editable) install: the wheel carries the Alembic migrations inside the
# package (hatch force-include), so `restock-service migrate` works without the source tree.
WORKDIR /build
COPY pyproject.toml constraints.txt README.md ./
COPY src ./src
COPY migrations ./migrations
RUN pip install --no-cache-dir -c constraints.txt . \
 && cd / && rm -rf /build

WORKDIR /data
ENV RESTOCK_DATABASE_URL=sqlite+aiosqlite:////data/restock.db
VOLUME ["/data"]

USER restock
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4).status != 200)"]

CMD ["restock-service", "serve", "--host", "0.0.0.0", "--port", "8000"]
