#!/bin/sh
# Builds the frontend agent's jar, for make setup and the image's agent stage: sh build.sh OUT.jar
set -eu
here=$(dirname "$0")
out=$1
classes="$(dirname "$out")/agent-classes"
rm -rf "$classes"
# Netty's ByteBuf is compiled against a stub of the methods used (stubs/, not packed): the frontend's own Netty runs.
javac --release 11 -sourcepath "$here/stubs" -implicit:none -d "$classes" "$here"/*.java
jar cfm "$out" "$here/MANIFEST.MF" -C "$classes" .
