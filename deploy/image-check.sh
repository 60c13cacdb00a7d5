#!/usr/bin/env bash
# `make image-check`: build the image, start compose (PostgreSQL, migration, two replicas behind
# nginx, the sandbox), drive a renewal through the published port, SIGKILL one replica mid-flow
# and see the other finish it, then stop everything. Needs root, docker (dockerd running or
# startable), docker-compose or `docker compose`, and debootstrap: no image registry is needed,
# the base images are built from Debian's packages (about 1 minute the first time).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PY:-.venv/bin/python}
WORK=${IMAGE_CHECK_WORK:-/var/tmp/renewbot-image-check}
PROJECT=renewbot-check
mkdir -p "$WORK"

if ! docker info >/dev/null 2>&1; then
    echo "starting dockerd (vfs storage driver)"
    nohup dockerd --storage-driver vfs >"$WORK/dockerd.log" 2>&1 &
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
fi
if docker compose version >/dev/null 2>&1; then COMPOSE=(docker compose); else COMPOSE=(docker-compose); fi

base_image() {  # name, extra debootstrap packages, post-install command, docker import changes...
    local name=$1 include=$2; shift 2
    docker image inspect "$name" >/dev/null 2>&1 && return
    echo "building $name from Debian's packages"
    rm -rf "$WORK/rootfs"
    debootstrap --variant=minbase --include="$include" bookworm "$WORK/rootfs" \
        http://deb.debian.org/debian >"$WORK/debootstrap.log"
    rm -rf "$WORK/rootfs/var/lib/apt/lists/"* "$WORK/rootfs/var/cache/apt/"*.bin
    "$@"
}
import_rootfs() { tar -C "$WORK/rootfs" -c . | docker import "$@" - >/dev/null; }
base_image local/python:3.11-bookworm python3,python3-venv,ca-certificates \
    import_rootfs - local/python:3.11-bookworm
services() {
    install -m 755 deploy/local/postgres-entrypoint.sh "$WORK/rootfs/usr/local/bin/"
    rm -f "$WORK/rootfs/etc/nginx/sites-enabled/default"
    ln -sf /dev/stdout "$WORK/rootfs/var/log/nginx/access.log"
    ln -sf /dev/stderr "$WORK/rootfs/var/log/nginx/error.log"
    tar -C "$WORK/rootfs" -c . | docker import \
        -c 'ENTRYPOINT ["/usr/local/bin/postgres-entrypoint.sh"]' - local/postgres:15
    tar -C "$WORK/rootfs" -c . | docker import -c 'CMD ["nginx", "-g", "daemon off;"]' - local/nginx
}
base_image local/postgres:15 postgresql-15,nginx-light,util-linux services
docker image inspect local/nginx >/dev/null 2>&1 || { docker rmi local/postgres:15; base_image local/postgres:15 postgresql-15,nginx-light,util-linux services; }

echo "wheels for the offline build"
rm -f deploy/wheelhouse/*.whl
"$PY" -m pip wheel --quiet --wheel-dir deploy/wheelhouse . "setuptools>=77" wheel 2>&1 \
    | { grep -v "WARNING: Location" || true; }
rm -f deploy/wheelhouse/renewbot-*.whl
t0=$(date +%s)
DOCKER_BUILDKIT=0 docker build --quiet --build-arg BASE_IMAGE=local/python:3.11-bookworm \
    --build-arg PIP_NO_INDEX=1 -t renewbot:check . >/dev/null
echo "image built in $(( $(date +%s) - t0 )) s; size: $(docker image inspect renewbot:check --format '{{.Size}}' | awk '{printf "%.0f MB", $1/1e6}') (base $(docker image inspect local/python:3.11-bookworm --format '{{.Size}}' | awk '{printf "%.0f MB", $1/1e6}'))"
docker run --rm renewbot:check --version
if docker run --rm --entrypoint sh renewbot:check -c 'command -v gcc cc' >/dev/null; then
    echo "image-check: the final image has a compiler"; exit 1
fi
[ "$(docker run --rm --entrypoint id renewbot:check -u)" = 10001 ] || { echo "image-check: runs as root"; exit 1; }

SECRETS="$WORK/secrets"
rm -rf "$SECRETS"; mkdir -p "$SECRETS"; chmod 755 "$SECRETS"
pw=$("$PY" -c 'import secrets; print(secrets.token_urlsafe(18))')
echo "$pw" > "$SECRETS/db_password"
echo "postgresql+asyncpg://renewbot:$pw@db:5432/renewbot" > "$SECRETS/database_url"
"$PY" -m bot keys generate > "$SECRETS/encryption_keys"
"$PY" -c 'from tests.servers.slack import BOT_TOKEN; print(BOT_TOKEN)' > "$SECRETS/slack_bot_token"
"$PY" -c 'from tests.integration.test_slack import SECRET; print(SECRET)' > "$SECRETS/slack_signing_secret"
: > "$SECRETS/slack_app_token"; : > "$SECRETS/teams_app_password"; : > "$SECRETS/monitor_api_keys"
chmod 644 "$SECRETS"/*
ENVFILE="$WORK/check.env"
{
    cat deploy/compose/sandbox.env
    echo "RENEWBOT_IMAGE=renewbot:check"
    echo "POSTGRES_IMAGE=local/postgres:15"
    echo "NGINX_IMAGE=local/nginx"
    echo "RENEWBOT_SECRETS=$SECRETS"
    echo "RENEWBOT_SLACK__API_URL=http://127.0.0.1:9300/api/"
    echo "RENEWBOT_SLACK__ALERT_CHANNEL=C-alerts"
} > "$ENVFILE"
DC=("${COMPOSE[@]}" -p "$PROJECT" -f compose.yaml -f deploy/check/compose.check.yaml --env-file "$ENVFILE" --profile sandbox)
cleanup() { "${DC[@]}" logs --no-color >"$WORK/compose.log" 2>&1 || true; "${DC[@]}" down -v --remove-orphans >/dev/null 2>&1 || true; }
trap cleanup EXIT
"${DC[@]}" config --quiet
t0=$(date +%s)
"${DC[@]}" up -d
"$PY" - <<'PYCSV' > "$WORK/tenants.csv"
from bot.demo import demo_tenants
from bot.sandbox.directory import demo_directory
print("slug,display_name,tenant_id,primary_domain,admin_upn")
for t in demo_tenants(demo_directory()):
    print(f"{t.slug},{t.display_name},{t.tenant_id},{t.primary_domain},{t.admin_upn}")
PYCSV
for _ in $(seq 60); do
    "${DC[@]}" exec -T bot-1 renewbot tenants list >/dev/null 2>&1 && break; sleep 1
done
"${DC[@]}" exec -T bot-1 renewbot tenants import /dev/stdin < "$WORK/tenants.csv"
"${DC[@]}" exec -T bot-1 renewbot check || true
PYTHONPATH="$ROOT" "$PY" deploy/check/drive.py "${DC[@]}"
echo "from \`up\` to a validated renewal: $(( $(date +%s) - t0 )) s (one replica killed on the way)"
echo "renewbot check, broken configurations:"
docker run --rm -e RENEWBOT_DATABASE__URL=postgresql://x renewbot:check check 2>&1 | tail -n 3 || true
docker run --rm -e RENEWBOT_SECURITY__ENCRYPTION_KEYS=not-a-key -e RENEWBOT_IDENTITY__AUTHORITY_HOST=https://127.0.0.1:9 renewbot:check check || true
echo "image-check: OK"
