# One image for every dbopt component (docs/deploy.md): `dbopt worker`, `dbopt advisor`, ... are its arguments.
# The dependencies are the locked ones (requirements/engine.lock, hashes checked), built into wheels in the
# first stage; the runtime stage has no compiler and no pip cache, runs as an unprivileged user, and writes
# only to /tmp (an emptyDir) and the worker's /data volume, so it runs with a read-only root filesystem.
# tests/test_deploy_image.py performs these steps without a container engine.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY requirements/ requirements/
RUN pip install --no-cache-dir --require-hashes -r requirements/build.lock
COPY pyproject.toml README.md LICENSE ./
COPY schemas/ schemas/
COPY streams/ streams/
RUN pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /wheels . \
    && pip wheel --no-cache-dir --require-hashes --wheel-dir /wheels -r requirements/engine.lock

FROM ${PYTHON_IMAGE}
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/dbopt/bin:$PATH \
    DBOPT_RUN_DIR=/tmp/dbopt \
    HOME=/tmp
RUN groupadd --system --gid 10001 dbopt \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin dbopt
COPY requirements/engine.lock /opt/dbopt-lock/engine.lock
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m venv /opt/dbopt \
    && /opt/dbopt/bin/pip install --no-cache-dir --no-index --find-links /wheels --require-hashes -r /opt/dbopt-lock/engine.lock \
    && /opt/dbopt/bin/pip install --no-cache-dir --no-index --no-deps /wheels/dbopt_streams-*.whl \
    && /opt/dbopt/bin/dbopt --version
USER 10001:10001
WORKDIR /tmp
EXPOSE 6066 8080 4318 9400
ENTRYPOINT ["dbopt"]
CMD ["--help"]
