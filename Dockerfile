# syntax=docker/dockerfile:1
# pdfrelay: one image for every handler, one handler per container:
#   docker build -t pdfrelay .
#   docker run --rm -e PDFRELAY_AMQP_URL=… -e PDFRELAY_S3_ENDPOINT=… pdfrelay run extract
# The Debian release is pinned (bookworm) so that the tesseract packages and the tessdata path
# below do not move under us when the python image switches its default release.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# README.md and LICENSE are part of the distribution's metadata (pyproject: readme, license-files).
COPY pyproject.toml README.md LICENSE ./
COPY handlers ./handlers
COPY shared ./shared
COPY infra ./infra
COPY pdfrelay_client ./pdfrelay_client
# PyMuPDF ships manylinux wheels: no compiler needed. A regular (not editable) install, so the
# runtime stage needs only the venv.
RUN pip install .

FROM ${PYTHON_IMAGE}
# OCR for scanned pages: PyMuPDF drives Tesseract through its tessdata directory.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        tesseract-ocr \
        tesseract-ocr-eng \
        tesseract-ocr-deu \
    && rm -rf /var/lib/apt/lists/*
ENV TESSDATA_PREFIX=/usr/share/tesseract-ocr/5/tessdata
# Fail the build, not the first scanned PDF, if the language data is not where PyMuPDF looks.
RUN test -f "$TESSDATA_PREFIX/eng.traineddata" && test -f "$TESSDATA_PREFIX/deu.traineddata"

# A numeric, unprivileged user: Kubernetes' runAsNonRoot can only verify a numeric USER.
RUN groupadd --system --gid 10001 pdfrelay \
    && useradd --system --uid 10001 --gid pdfrelay --home-dir /home/pdfrelay --create-home \
        --shell /usr/sbin/nologin pdfrelay

COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PDFRELAY_HTTP_HOST=0.0.0.0 \
    PDFRELAY_HTTP_PORT=8080 \
    PDFRELAY_METRICS_PORT=9100

USER 10001:10001
WORKDIR /home/pdfrelay
# 8080: the ingress' HTTP API; 9100: /healthz and /metrics of the other handlers.
EXPOSE 8080 9100
ENTRYPOINT ["pdfrelay"]
CMD ["--help"]
