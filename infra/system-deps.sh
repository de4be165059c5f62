#!/usr/bin/env bash
# System packages pdfrelay's tests and OCR need (Debian): Tesseract with English and German data,
# and docker-compose to validate docker-compose.yml. Installs only what is missing.
set -euo pipefail

missing=()
command -v tesseract >/dev/null 2>&1 || missing+=(tesseract-ocr)
for lang in eng deu; do
  ls /usr/share/tesseract-ocr/*/tessdata/"$lang".traineddata >/dev/null 2>&1 \
    || missing+=("tesseract-ocr-$lang")
done
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "pdfrelay: please install: ${missing[*]} (needs root and apt-get)" >&2
  exit 1
fi
echo "pdfrelay: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
