# brainscan: one image for the API, the workers and the one-shot migration.
#   docker build -t brainscan .                       (CPU: tensorflow-cpu)
#   docker build -t brainscan:gpu --build-arg GPU=1 . (NVIDIA: tensorflow[and-cuda] instead)
FROM python:3.11-slim-bookworm

ARG GPU=0
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    BRAINSCAN_MODEL_PATH=/app/models/brainscan.keras BRAINSCAN_DATA_DIR=/var/lib/brainscan

RUN groupadd --system brainscan && useradd --system --gid brainscan --home /app brainscan
WORKDIR /app
COPY pyproject.toml README.md ./
COPY brainscan ./brainscan
COPY training ./training
COPY db ./db
COPY worker ./worker
COPY api ./api
COPY migrations ./migrations
RUN pip install . \
 && if [ "$GPU" = "1" ]; then \
      TF=$(pip show tensorflow-cpu | sed -n 's/^Version: //p'); \
      pip uninstall -y tensorflow-cpu && pip install "tensorflow[and-cuda]==${TF}"; \
    fi
COPY models ./models
RUN mkdir -p /var/lib/brainscan && chown brainscan:brainscan /var/lib/brainscan
USER brainscan
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz').status == 200 else 1)" || exit 1
CMD ["brainscan", "api", "--host", "0.0.0.0", "--port", "8080"]
