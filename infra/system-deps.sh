#!/usr/bin/env bash
# System packages pdfrelay needs (Debian), installed only when missing:
#   OCR: Tesseract with English and German data (MuPDF's built-in Tesseract reads the data);
#   tests: docker-compose, to validate docker-compose.yml; chromium, the browser the console's
#   end-to-end tests drive (Playwright with `executable_path`; its own browser download is not
#   used). CHROMIUM (default /usr/bin/chromium) is where it is looked for; iptables, to cut a node
#   of the test RabbitMQ cluster off (tests/reliability/test_cluster.py).
#
#   infra/system-deps.sh              everything, fails when it cannot install (`make test`)
#   infra/system-deps.sh --ocr        only what the service uses (`make run`)
#   infra/system-deps.sh --soft       when it cannot install (not root, no apt-get): say what to
#                                     install and exit 0 (`make run` starts anyway)
#   infra/system-deps.sh --dry-run    say what would be installed, install nothing
# TESSDATA_ROOT (default /usr/share/tesseract-ocr) is where the language data is looked for and
# TESSERACT (default tesseract) the command, APT_GET (default apt-get) the installer: tests point
# them elsewhere to see what would happen.
set -euo pipefail

ocr_only=0 soft=0 dry=0
for arg in "$@"; do
  case "$arg" in
    --ocr) ocr_only=1 ;;
    --soft) soft=1 ;;
    --dry-run) dry=1 ;;
    *) echo "system-deps.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done
root="${TESSDATA_ROOT:-/usr/share/tesseract-ocr}"

missing=()
command -v "${TESSERACT:-tesseract}" >/dev/null 2>&1 || missing+=(tesseract-ocr)
for lang in eng deu; do
  compgen -G "$root/*/tessdata/$lang.traineddata" >/dev/null \
    || compgen -G "$root/tessdata/$lang.traineddata" >/dev/null \
    || missing+=("tesseract-ocr-$lang")
done
if [ "$ocr_only" -eq 0 ]; then
  command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
  [ -x "${CHROMIUM:-/usr/bin/chromium}" ] || missing+=(chromium)
  # The cluster partition scenario cuts a RabbitMQ node off with iptables on loopback.
  command -v iptables >/dev/null 2>&1 || [ -x /usr/sbin/iptables ] || missing+=(iptables)
fi

if [ ${#missing[@]} -eq 0 ]; then
  echo "pdfrelay: system packages present (Tesseract eng, deu)" >&2
  exit 0
fi
if [ "$dry" -eq 1 ]; then
  echo "pdfrelay: would install: ${missing[*]}" >&2
  exit 0
fi
apt="${APT_GET:-apt-get}"
if [ "$(id -u)" -ne 0 ] || ! command -v "$apt" >/dev/null 2>&1; then
  echo "pdfrelay: please install: ${missing[*]} (needs root and apt-get)" >&2
  if [ "$soft" -eq 1 ]; then
    echo "pdfrelay: starting without them: OCR is unavailable (\`ocr: auto\` keeps the text layer)" >&2
    exit 0
  fi
  exit 1
fi
echo "pdfrelay: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
if ! { "$apt" update -qq && "$apt" install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }; then
  echo "pdfrelay: could not install ${missing[*]}" >&2
  [ "$soft" -eq 1 ] && exit 0
  exit 1
fi
