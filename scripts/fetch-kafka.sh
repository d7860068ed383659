#!/usr/bin/env bash
# Fetch an Apache Kafka broker (org.apache.kafka:kafka_2.13 and its runtime dependencies,
# KRaft mode: no ZooKeeper) from Maven Central into a cache directory, once. After that it
# is offline: a cache that holds the jars and the stamp file is left as it is.
#
#   scripts/fetch-kafka.sh [CACHE_DIR]
#
# CACHE_DIR defaults to $LIMITLESS_KAFKA_HOME, else ~/.cache/limitless-streamer/kafka-$VERSION.
# The version is $LIMITLESS_KAFKA_VERSION (default below). Prints the cache directory.
# The tests' Kafka fixture (tests/brokers/kafka_broker.py) reads the same directory and
# starts the broker with `java -cp 'CACHE_DIR/libs/*' kafka.Kafka server.properties`.
set -euo pipefail

VERSION="${LIMITLESS_KAFKA_VERSION:-4.4.0}"
CACHE="${1:-${LIMITLESS_KAFKA_HOME:-$HOME/.cache/limitless-streamer/kafka-$VERSION}}"
STAMP="$CACHE/libs/.complete-$VERSION"

if [[ -f "$STAMP" ]]; then
  echo "$CACHE"
  exit 0
fi
command -v mvn >/dev/null || { echo "fetch-kafka: mvn not found" >&2; exit 1; }
command -v java >/dev/null || { echo "fetch-kafka: java not found" >&2; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cat >"$work/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>limitless-streamer</groupId>
  <artifactId>kafka-broker-jars</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>$VERSION</version>
    </dependency>
    <!-- the broker logs through SLF4J; kafka_2.13 leaves the binding to the distribution,
         which ships log4j2 (as here) -->
    <dependency>
      <groupId>org.slf4j</groupId>
      <artifactId>slf4j-api</artifactId>
      <version>2.0.17</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j2-impl</artifactId>
      <version>2.26.1</version>
    </dependency>
  </dependencies>
</project>
POM
mkdir -p "$CACHE"
rm -rf "$CACHE/libs.partial"
mvn -q -B -Dstyle.color=never -f "$work/pom.xml" dependency:copy-dependencies \
  -DincludeScope=runtime -DoutputDirectory="$CACHE/libs.partial" >&2
rm -rf "$CACHE/libs"
mv "$CACHE/libs.partial" "$CACHE/libs"
touch "$STAMP"
echo "$CACHE"
