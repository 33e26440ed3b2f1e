#!/usr/bin/env bash
# Grants each driftline service's Kafka principal the least ACLs it needs, on a cluster
# whose brokers run an authorizer (docs/SECURITY.md, "Kafka ACLs", has the table and the
# broker settings). Adding an ACL that exists is a no-op, so it can run again.
#   infra/acls.sh BOOTSTRAP_SERVERS [ADMIN_CLIENT_PROPERTIES]
# ADMIN_CLIENT_PROPERTIES is a Java client properties file for a principal allowed to
# change ACLs (a super user), e.g. security.protocol=SASL_SSL, sasl.mechanism, sasl.jaas.config,
# ssl.truststore.type=PEM, ssl.truststore.location.
# Principals are User:<prefix><service> with the prefix DRIFTLINE_ACL_USER_PREFIX
# (default "driftline-"): send (send_data and other producers of traffic), predictor,
# joiner, monitor, trainer and operator (`driftline models`). Topic and group names are
# the services' own settings (DRIFTLINE_TOPIC_*, DRIFTLINE_*_GROUP), defaults otherwise.
# DRIFTLINE_ACL_DRY_RUN=1 prints the ACLs instead of adding them.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/env.sh"
source "$here/kafka/node.sh"

if [ $# -lt 1 ] || [ $# -gt 2 ] || [ "$1" = "--help" ] || [ "$1" = "-h" ]; then
    sed -n "2,13p" "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
fi
bootstrap=$1
config=${2:-}
[ -z "$config" ] || [ -r "$config" ] || { echo "cannot read $config" >&2; exit 2; }
user=${DRIFTLINE_ACL_USER_PREFIX:-driftline-}

requests=${DRIFTLINE_TOPIC_REQUESTS:-driftline.requests}
predictions=${DRIFTLINE_TOPIC_PREDICTIONS:-driftline.predictions}
actuals=${DRIFTLINE_TOPIC_ACTUALS:-driftline.actuals}
labelled=${DRIFTLINE_TOPIC_LABELLED:-driftline.labelled}
drift=${DRIFTLINE_TOPIC_DRIFT:-driftline.drift}
retrain=${DRIFTLINE_TOPIC_RETRAIN:-driftline.retrain}
models=${DRIFTLINE_TOPIC_MODELS:-driftline.models}
dlq=${DRIFTLINE_TOPIC_DLQ:-driftline.dlq}
progress=${DRIFTLINE_TOPIC_PROGRESS:-driftline.progress}

# allow SERVICE PATTERN OPERATIONS RESOURCE_FLAG NAME [RESOURCE_FLAG NAME]...
# OPERATIONS is a space-separated list; every operation applies to every resource named.
allow() {
    local principal="User:$user$1" pattern=$2 ops=() op
    for op in $3; do ops+=(--operation "$op"); done
    shift 3
    if [ -n "${DRIFTLINE_ACL_DRY_RUN:-}" ]; then
        echo "$principal $pattern ${ops[*]} $*"
        return
    fi
    kafka_java org.apache.kafka.tools.AclCommand --bootstrap-server "$bootstrap" \
        ${config:+--command-config "$config"} --add --allow-principal "$principal" \
        --resource-pattern-type "$pattern" "${ops[@]}" "$@" >/dev/null ||
        { echo "adding ACLs for $principal failed (see above)" >&2; exit 1; }
    echo "$principal: $pattern ${ops[*]//--operation /} ${*//--/}" >&2
}

# A consuming service owns the names that start with its group: the group itself and its
# changelog's restore group, its transactional ids (<group>-<hash>, the trainer's
# <group>-publish-<n>) and its changelog topic (<group>-changelog, created on first start).
# A reader of the registry also reads it in groups driftline-registry-<pid> (assigned, never
# committed, but the client still looks up their coordinator).
service() {
    local name=$1 group=$2 reads=$3 writes=$4 flags=() t groups=(--group "$2")
    for t in $reads; do flags+=(--topic "$t"); done
    allow "$name" literal Read "${flags[@]}"
    flags=()
    for t in $writes; do flags+=(--topic "$t"); done
    allow "$name" literal Write "${flags[@]}"
    [[ " $reads " == *" $models "* ]] && groups+=(--group driftline-registry-)
    allow "$name" prefixed Read "${groups[@]}"
    allow "$name" prefixed Write --transactional-id "$group"
    allow "$name" prefixed "Create Read Write" --topic "$group-"
}

allow send literal Write --topic "$requests" --topic "$actuals"
service predictor "${DRIFTLINE_PREDICTOR_GROUP:-driftline-predictor}" \
    "$requests $models $progress" "$predictions $dlq"
service joiner "${DRIFTLINE_JOINER_GROUP:-driftline-joiner}" \
    "$predictions $actuals" "$labelled $dlq"
service monitor "${DRIFTLINE_MONITOR_GROUP:-driftline-monitor}" \
    "$predictions $labelled $models" "$drift $retrain $dlq"
# The trainer alone writes the registry: what serves is what it (or the operator) signs.
# It writes retrain requests too: its schedule and bootstrap go through the partition's owner.
service trainer "${DRIFTLINE_TRAINER_GROUP:-driftline-trainer}" \
    "$labelled $retrain $models" "$models $retrain $progress $dlq"
allow operator literal "Read Write" --topic "$models"
allow operator prefixed Read --group driftline-registry-
