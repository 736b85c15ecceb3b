# restock-service: the HTTP API on port 8000.
# Before the first start, migrate:  docker run --rm -v restock-data:/data IMAGE restock-service migrate
# tests/test_dockerfile.py checks this file against the lock files and the entry point.

# The wheel, built by the locked build backend. It carries the Alembic migrations inside the
# package (hatch force-include), so `restock-service migrate` works without the source tree.
FROM python:3.11-slim AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /build
COPY requirements/build.txt ./requirements/
RUN pip install --no-cache-dir --require-hashes -r requirements/build.txt
COPY pyproject.toml README.md ./
COPY src ./src
COPY migrations ./migrations
RUN pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /wheels .

# The image: the runtime lock, every file checked against its hash, then the wheel alone.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

RUN useradd --system --user-group --uid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin restock \
 && mkdir /data \
 && chown restock:restock /data

COPY requirements/runtime.txt /tmp/runtime.txt
RUN pip install --no-cache-dir --require-hashes -r /tmp/runtime.txt \
 && rm /tmp/runtime.txt
COPY --from=build /wheels /tmp/wheels
RUN pip install --no-cache-dir --no-deps /tmp/wheels/*.whl \
 && rm -rf /tmp/wheels

# No RESTOCK_* setting: the defaults of `restock-service serve`, so the default SQLite file
# ./restock.db is /data/restock.db, on the volume.
WORKDIR /data
VOLUME ["/data"]

USER restock
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4).status != 200)"]

# Only --host differs from serve's defaults: in a container it must listen beyond loopback.
CMD ["restock-service", "serve", "--host", "0.0.0.0"]
