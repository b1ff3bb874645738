#!/bin/sh
# docker-compose's kafka-init job, in the apache/kafka image: the same security as scripts/kafka.sh.
# Makes once, into /secrets: a CA and a broker certificate (keytool, PKCS12), a password per principal
# (credentials.properties, 0600), server.properties (SASL_SSL + StandardAuthorizer, 0600), an admin
# client config for the health check; formats /var/lib/kafka/data with every SCRAM credential.
# PRINCIPALS mirrors services/kafka_security.PRINCIPALS (tests/unit/test_compose.py checks it).
set -eu
PRINCIPALS="admin broker custodian issuer oracle venue ledger projector auditor"
S=/secrets
DATA=/var/lib/kafka/data
KAFKA_UID=1000  # apache/kafka runs as appuser
umask 077

if [ ! -s "$S/credentials.properties" ]; then
    for name in $PRINCIPALS; do
        printf '%s=%s\n' "$name" "$(head -c 24 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
    done >"$S/credentials.properties.tmp"
    mv "$S/credentials.properties.tmp" "$S/credentials.properties"
fi
cred() { sed -n "s/^$1=//p" "$S/credentials.properties"; }
STOREPASS=$(cred broker)

if [ ! -s "$S/broker.p12" ]; then
    rm -f "$S/ca.p12" "$S/ca.pem" "$S/truststore.p12"
    keytool -genkeypair -alias ca -keyalg EC -groupname secp256r1 -dname "CN=stockledger compose CA" \
        -ext bc:c -validity 3650 -keystore "$S/ca.p12" -storetype PKCS12 -storepass "$STOREPASS"
    keytool -exportcert -rfc -alias ca -keystore "$S/ca.p12" -storepass "$STOREPASS" >"$S/ca.pem"
    keytool -importcert -noprompt -alias ca -file "$S/ca.pem" -keystore "$S/truststore.p12" -storetype PKCS12 \
        -storepass "$STOREPASS"
    keytool -genkeypair -alias broker -keyalg EC -groupname secp256r1 -dname "CN=stockledger-broker" \
        -validity 730 -keystore "$S/broker.p12" -storetype PKCS12 -storepass "$STOREPASS"
    keytool -certreq -alias broker -keystore "$S/broker.p12" -storepass "$STOREPASS" \
        | keytool -gencert -alias ca -keystore "$S/ca.p12" -storepass "$STOREPASS" -rfc -validity 730 \
            -ext san=dns:kafka,dns:localhost,ip:127.0.0.1 -ext eku=serverAuth,clientAuth >"$S/broker.pem"
    keytool -importcert -noprompt -alias ca -file "$S/ca.pem" -keystore "$S/broker.p12" -storepass "$STOREPASS"
    keytool -importcert -alias broker -file "$S/broker.pem" -keystore "$S/broker.p12" -storepass "$STOREPASS"
    chmod 644 "$S/ca.pem"
fi

cat >"$S/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@kafka:9093
log.dirs=$DATA
listeners=SASL_SSL://:9092,CONTROLLER://:9093
advertised.listeners=SASL_SSL://kafka:9092
inter.broker.listener.name=SASL_SSL
controller.listener.names=CONTROLLER
listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:SSL
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="broker" password="$(cred broker)";
ssl.keystore.type=PKCS12
ssl.keystore.location=$S/broker.p12
ssl.keystore.password=$STOREPASS
ssl.truststore.type=PKCS12
ssl.truststore.location=$S/truststore.p12
ssl.truststore.password=$STOREPASS
listener.name.controller.ssl.client.auth=required
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:admin;User:broker;User:CN=stockledger-broker
auto.create.topics.enable=false
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
EOF

cat >"$S/admin-client.properties" <<EOF
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$(cred admin)";
ssl.truststore.type=PEM
ssl.truststore.location=$S/ca.pem
EOF

if [ ! -f "$DATA/meta.properties" ]; then
    set --
    for name in $PRINCIPALS; do set -- "$@" --add-scram "SCRAM-SHA-512=[name=$name,password=$(cred "$name")]"; done
    /opt/kafka/bin/kafka-storage.sh format -t "$(/opt/kafka/bin/kafka-storage.sh random-uuid)" \
        -c "$S/server.properties" "$@" >/dev/null
fi
chown -R "$KAFKA_UID:$KAFKA_UID" "$S" "$DATA"
echo "kafka-init: certificates, credentials and storage ready"
