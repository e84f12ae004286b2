# Redis from Debian's redis-server package, for sites that pull no images: build it with
#   docker build -t local/redis:bookworm --build-arg BASE_IMAGE=... - < docker/redis.Dockerfile
# and set ZREPQ_REDIS_IMAGE=local/redis:bookworm in docker/.env. It behaves like the official
# image as docker/compose.yaml uses it: redis-server and redis-cli on PATH, data in /data,
# running as the redis user.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server \
    && apt-get clean && rm -rf /var/lib/apt/lists/* \
    && install -d -o redis -g redis /data
WORKDIR /data
# The package creates `redis` with the next free system uid; this image's passwd names it.
# hadolint ignore=DL3066
USER redis
EXPOSE 6379
CMD ["redis-server"]
