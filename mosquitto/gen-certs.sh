#!/bin/sh
# Make a private CA, a Mosquitto server certificate and client certificates.
#
#   mosquitto/gen-certs.sh DIR
#
# Writes DIR/ca.crt ca.key server.crt server.key and, for each name in
# $CLIENTS (default "voicebus"), DIR/<name>.crt <name>.key (EC P-256 keys).
# The server certificate is valid for the names in $SERVER_NAMES (default
# "localhost 127.0.0.1"): clients check that the host they dial is one of them.
# $DAYS sets the validity (default 825). Private keys never belong in git.
set -eu
dir=${1:?usage: gen-certs.sh DIR}
names=${SERVER_NAMES:-localhost 127.0.0.1}
clients=${CLIENTS:-voicebus}
days=${DAYS:-825}
mkdir -p "$dir"
cd "$dir"
umask 077

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

san=""
for name in $names; do
    case $name in
        *[!0-9.]*) entry="DNS:$name" ;;
        *) entry="IP:$name" ;;
    esac
    san="${san:+$san,}$entry"
done

key ca.key
openssl req -x509 -new -key ca.key -days "$days" -subj "/CN=voicebus CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" -out ca.crt

sign() {  # sign NAME CN EXTENSIONS
    key "$1.key"
    openssl req -new -key "$1.key" -subj "/CN=$2" -out "$1.csr"
    printf '%s\n' "$3" > "$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial \
        -days "$days" -extfile "$1.ext" -out "$1.crt" 2>/dev/null
    rm -f "$1.csr" "$1.ext"
}

sign server "$(echo "$names" | cut -d' ' -f1)" \
    "subjectAltName=$san
extendedKeyUsage=serverAuth
keyUsage=critical,digitalSignature"
for client in $clients; do
    sign "$client" "$client" "extendedKeyUsage=clientAuth
keyUsage=critical,digitalSignature"
done
chmod 644 ./*.crt
echo "certificates in $dir: ca.crt server.crt/.key $(for c in $clients; do printf '%s.crt/.key ' "$c"; done)"
