# pitlane worker image: the package and its CLI, nothing else.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md topics.yaml ./
COPY src ./src
RUN pip install --no-cache-dir . && useradd --system pitlane
USER pitlane
ENV PITLANE_TOPICS_FILE=/app/topics.yaml
ENTRYPOINT ["pitlane"]
CMD ["worker"]
