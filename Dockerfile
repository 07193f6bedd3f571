# The voicebus command line (the "demo" service of docker-compose.yml).
#   docker build -t voicebus:dev . && docker run --rm voicebus:dev demo --url memory://
FROM python:3.11-slim

WORKDIR /src
COPY pyproject.toml README.md ./
COPY voicebus ./voicebus
RUN pip install --no-cache-dir . \
    && useradd --create-home --uid 10001 voicebus

USER voicebus
ENV PYTHONUNBUFFERED=1 \
    VOICEBUS_URL=mqtt://mosquitto:1883
ENTRYPOINT ["voicebus"]
CMD ["demo", "--utterances", "3"]
