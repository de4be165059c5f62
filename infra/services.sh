#!/usr/bin/env bash
# Make sure the local RabbitMQ is running (the S3 server is started by the tests and `pdfrelay dev`).
set -euo pipefail
if command -v rabbitmqctl >/dev/null 2>&1; then
  if ! rabbitmqctl -q status >/dev/null 2>&1; then
    echo "pdfrelay: starting RabbitMQ" >&2
    rabbitmq-server -detached
  fi
  rabbitmqctl -q await_startup --timeout 120 >/dev/null
elif [ -z "${PDFRELAY_TEST_AMQP_URL:-}" ] && ! docker info >/dev/null 2>&1; then
  echo "pdfrelay: no RabbitMQ: install rabbitmq-server, set PDFRELAY_TEST_AMQP_URL, or run Docker" >&2
  exit 1
fi
