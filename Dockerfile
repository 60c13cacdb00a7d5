# renewbot: the bot's container image. Multi-stage: wheels are built in the first stage, the
# final stage has Python, the installed application and nothing to compile with.
#
#   docker build -t renewbot .
#
# BASE_IMAGE: any Debian-based image with python3.11 and its venv module. Offline builds pass a
# local one and put every wheel in deploy/wheelhouse/ with PIP_NO_INDEX=1 (see
# deploy/image-check.sh).
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
ARG PIP_NO_INDEX=0
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_FIND_LINKS=/wheelhouse \
    PIP_NO_INDEX=${PIP_NO_INDEX}
COPY deploy/wheelhouse/ /wheelhouse/
COPY pyproject.toml README.md /src/
COPY core/ /src/core/
COPY adapters/ /src/adapters/
COPY bot/ /src/bot/
COPY manifests/ /src/manifests/
RUN python3 -m venv /opt/renewbot \
    && /opt/renewbot/bin/pip wheel --wheel-dir /wheels /src \
    && /opt/renewbot/bin/pip install --no-index --find-links /wheels renewbot \
    && /opt/renewbot/bin/pip uninstall --yes pip

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="renewbot" \
      org.opencontainers.image.description="Slack and Teams bot that renews expired Microsoft 365 tokens" \
      org.opencontainers.image.licenses="MIT"
# /var/lib/renewbot: the one writable place (a SQLite file, the sandbox's CA), owned by the user
RUN groupadd --system --gid 10001 renewbot \
    && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
       --shell /usr/sbin/nologin renewbot \
    && install -d -o 10001 -g 10001 /var/lib/renewbot
COPY --from=build /opt/renewbot /opt/renewbot
ENV PATH=/opt/renewbot/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    RENEWBOT_WEB__HOST=0.0.0.0 \
    RENEWBOT_WEB__PORT=8080
USER 10001
EXPOSE 8080
# /healthz answers while the process serves; the orchestrator's readiness uses /readyz
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('RENEWBOT_WEB__PORT', '8080'), timeout=4)"]
# exec form: renewbot is PID 1 and gets SIGTERM itself (graceful stop, see bot/web.py)
ENTRYPOINT ["renewbot"]
CMD ["serve"]
