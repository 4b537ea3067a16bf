# pitlane worker image: the package, its hot path compiled by mypyc (setup.py), and
# its CLI. The compiler and its toolchain stay in the build stage.
FROM python:3.11-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py constraints.txt README.md topics.yaml ./
COPY src ./src
# The dependencies first (mypy reads their types), then pitlane itself, compiled.
RUN python -m venv /opt/pitlane \
    && /opt/pitlane/bin/pip install --no-cache-dir -c constraints.txt '.[compile]' \
    && PITLANE_COMPILE=1 /opt/pitlane/bin/pip install --no-cache-dir --no-build-isolation \
       --no-deps --force-reinstall . \
    && /opt/pitlane/bin/python -c 'from pitlane.compiled import build; assert build() == "compiled"' \
    && /opt/pitlane/bin/pip uninstall -y mypy

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH=/opt/pitlane/bin:$PATH
COPY --from=build /opt/pitlane /opt/pitlane
WORKDIR /app
COPY topics.yaml ./
RUN useradd --system pitlane
USER pitlane
ENV PITLANE_TOPICS_FILE=/app/topics.yaml
ENTRYPOINT ["pitlane"]
CMD ["worker"]
