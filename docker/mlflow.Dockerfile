# MLflow tracking server for the compose stack: Postgres backend store (psycopg2), MinIO/S3 artifacts (boto3).
# Built from the repository root so that the server gets the same pinned dependency set as the project:
#   docker build -f docker/mlflow.Dockerfile -t fedshare-mlflow:3.17.2 .
FROM python:3.11-slim

ARG MLFLOW_VERSION=3.17.2
ARG PSYCOPG2_VERSION=2.9.13
ARG BOTO3_VERSION=1.44.5
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 \
    MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true

COPY constraints.txt /tmp/constraints.txt
RUN pip install -q "mlflow==${MLFLOW_VERSION}" "psycopg2-binary==${PSYCOPG2_VERSION}" "boto3==${BOTO3_VERSION}" \
        -c /tmp/constraints.txt \
 && useradd --create-home --uid 1000 mlflow

USER mlflow
WORKDIR /home/mlflow
EXPOSE 5000
# The compose file gives the real command (stores, workers, allowed hosts).
CMD ["mlflow", "server", "--host", "0.0.0.0", "--port", "5000"]
