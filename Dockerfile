# The image a Docker or Kubernetes work pool runs emag-sync's flow runs in; README, "Work pools beyond process".
#
#   docker build -t registry.example.com/emag-sync:0.1.0 .
#   docker push registry.example.com/emag-sync:0.1.0
#
# The worker (on another machine, not in this image) starts one container per flow run with the command
# `prefect flow-run execute` and the flow run's id in PREFECT__FLOW_RUN_ID; the run then follows the
# deployment's pull step (deploy/prefect.docker.yaml: change into /opt/emag-sync) and loads its entrypoint
# (flows/sync.py:emag_product_sync) from there. So the image holds Prefect and emag-sync, installed from
# pyproject.toml, and the project's files in its working directory.
#
# Nothing secret is built in. A container gets PREFECT_API_URL and EMAG_SYNC_DATABASE_URL at run time
# (the work pool's env), and the eMAG credentials from the Secret blocks emag-<account>-username/-password.
# The embedded PostgreSQL that emag-sync starts when EMAG_SYNC_DATABASE_URL is unset would live and die
# with one container: a worker image always points EMAG_SYNC_DATABASE_URL at a real server.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /opt/emag-sync

# What `pip install .` builds from: pyproject.toml (with the README it names), and every package that
# [tool.setuptools.packages.find] includes (tests/test_dockerfile.py keeps this list and that one equal).
COPY pyproject.toml README.md ./
COPY emag_sync ./emag_sync
COPY tasks ./tasks
COPY flows ./flows
COPY expectations ./expectations
COPY emag_sandbox ./emag_sandbox
# The deployments, so `prefect deploy --prefect-file ...` can also be run from inside the image.
COPY prefect.yaml ./
COPY deploy ./deploy

# Installed, not editable: the working directory only serves the entrypoint's file path. The build's
# leftovers go so that the tree above is all the working directory holds. (`emag-sync serve` and
# `setup-prefect` read the prefect.yaml of a checkout, next to the package: run them from a checkout.)
RUN pip install . \
    && rm -rf build ./*.egg-info

# A user of its own, never root; EMAG_SYNC_HOME (Great Expectations' results and Data Docs) is the one
# place it writes to. The code stays root's and read-only.
RUN useradd --system --create-home --uid 10001 --user-group emag \
    && mkdir -p /var/lib/emag-sync \
    && chown emag:emag /var/lib/emag-sync
ENV EMAG_SYNC_HOME=/var/lib/emag-sync
# by number: Kubernetes' runAsNonRoot can only verify a numeric user
USER 10001:10001

# What the work pool runs, so `docker run -e PREFECT_API_URL=... -e PREFECT__FLOW_RUN_ID=...` does the same
# by hand; a pool's job template sets its own command and this one is not used there.
CMD ["prefect", "flow-run", "execute"]
