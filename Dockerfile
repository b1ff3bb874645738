# stockledger image for docker-compose: the CLI and its dependencies, nothing else.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY ledger ledger
COPY schemas schemas
COPY streams streams
COPY services services
RUN pip install --no-cache-dir .
ENTRYPOINT []
