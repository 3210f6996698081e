#!/bin/sh
# Builds the frontend agent's jar, for make setup and the image's agent stage: sh build.sh OUT.jar
set -eu
here=$(dirname "$0")
out=$1
classes="$(dirname "$out")/agent-classes"
rm -rf "$classes"
javac --release 11 -d "$classes" "$here/SequenceRetryFix.java"
jar cfm "$out" "$here/MANIFEST.MF" -C "$classes" .
