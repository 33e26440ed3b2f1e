# Shared settings for the infra scripts (sourced, not run). Every value can be overridden
# from the environment; see driftline.env.example.
_infra=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DRIFTLINE_CACHE=${DRIFTLINE_CACHE:-$HOME/.cache/driftline}
# The Apache Kafka release is pinned in infra/kafka/pom.xml; its jars are cached per version.
KAFKA_VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$_infra/kafka/pom.xml")
KAFKA_LIBS=${KAFKA_LIBS:-$DRIFTLINE_CACHE/kafka-$KAFKA_VERSION/libs}
DRIFTLINE_BROKER_PORT=${DRIFTLINE_BROKER_PORT:-9092}
DRIFTLINE_BROKER_DIR=${DRIFTLINE_BROKER_DIR:-$DRIFTLINE_CACHE/broker}
DRIFTLINE_VENV=${DRIFTLINE_VENV:-$DRIFTLINE_CACHE/venv}
# Build outputs live outside the clone so a second run (or a fresh clone) reuses them.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$DRIFTLINE_CACHE/target}
export DRIFTLINE_CACHE KAFKA_VERSION KAFKA_LIBS DRIFTLINE_BROKER_PORT DRIFTLINE_BROKER_DIR DRIFTLINE_VENV
unset _infra
