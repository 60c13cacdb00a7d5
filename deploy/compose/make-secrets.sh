#!/bin/sh
# Create the secret files compose.yaml mounts (an empty file is an unused setting). Existing
# files are kept. Fill in the Slack or Teams ones afterwards.
set -eu
cd "$(dirname "$0")/secrets"
umask 077
new() { [ -e "$1" ] || printf '%s\n' "$2" > "$1"; }
password=$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')
new db_password "$password"
new database_url "postgresql+asyncpg://renewbot:$(cat db_password)@db:5432/renewbot"
new encryption_keys "$(python3 -c 'import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())')"
for name in slack_bot_token slack_signing_secret slack_app_token teams_app_password monitor_api_keys; do
    new "$name" ""
done
# the bot runs as uid 10001: compose mounts these files as they are
chmod 644 ./*
echo "secrets in $(pwd): fill in slack_* or teams_app_password"
