#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks for driftline, and skips what is there:
# Debian packages (Java and Maven for the broker, libclang for RocksDB's bindings, OpenSSL
# headers for Kafka's TLS and SASL/SCRAM), Apache Kafka's jars from Maven Central (pinned
# in infra/kafka/pom.xml, cached outside the repo), and a Python venv with confluent-kafka,
# fastavro and schemathesis for the interoperability and HTTP API tests.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/env.sh"
mkdir -p "$DRIFTLINE_CACHE"

log() { printf '[setup] %s\n' "$*" >&2; }

missing=()
# openjdk/maven: the broker. libclang: RocksDB's bindings. libssl-dev/pkg-config: librdkafka's
# TLS and SCRAM. openssl: the TLS test's certificates. chromium: the dashboard's
# headless-browser test. wrk: the HTTP benchmark's load generator.
for pkg in openjdk-17-jre-headless maven libclang-dev libssl-dev pkg-config openssl chromium wrk; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    sudo_cmd=""
    [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
else
    log "apt packages present"
fi

if [ -f "$KAFKA_LIBS/kafka_2.13-$KAFKA_VERSION.jar" ]; then
    log "Apache Kafka $KAFKA_VERSION present ($KAFKA_LIBS)"
else
    log "fetching Apache Kafka $KAFKA_VERSION and its dependencies from Maven Central"
    rm -rf "$KAFKA_LIBS.partial"
    mvn -B -Dstyle.color=never -f "$here/kafka/pom.xml" dependency:copy-dependencies \
        -DoutputDirectory="$KAFKA_LIBS.partial" >"$DRIFTLINE_CACHE/kafka-fetch.log" 2>&1 || {
        tail -n 30 "$DRIFTLINE_CACHE/kafka-fetch.log" >&2
        exit 1
    }
    mv "$KAFKA_LIBS.partial" "$KAFKA_LIBS"
fi

# confluent-kafka and fastavro for the interop test, schemathesis for the HTTP API's.
if "$DRIFTLINE_VENV/bin/python" -c 'import confluent_kafka, fastavro, schemathesis' 2>/dev/null; then
    log "python venv present"
else
    log "creating python venv with confluent-kafka, fastavro and schemathesis"
    python3 -m venv "$DRIFTLINE_VENV"
    "$DRIFTLINE_VENV/bin/pip" install -q --disable-pip-version-check confluent-kafka fastavro \
        schemathesis==4.32.5
fi
