# GPU-capable image on Ray's CUDA base. Build:
#   docker build -t bg-removal .                                  # weights fetched on first use
#   docker build --build-arg BAKE_U2NET=u2net -t bg-removal .     # U2-Net weights baked in
# Run (one node):
#   docker run --gpus all -p 8000:8000 -v bg-models:/models -e HF_TOKEN=... bg-removal
# On KubeRay, use this image for the head and workers: configs/kuberay/ (README, "Kubernetes").
ARG RAY_IMAGE=rayproject/ray:2.60.0-py311-gpu
FROM ${RAY_IMAGE}

# Ray's images run as the non-root user `ray` (uid 1000); keep it that way.
USER ray
WORKDIR /home/ray/app

ENV PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    HF_HOME=/models/huggingface \
    U2NET_HOME=/models/u2net

COPY --chown=ray:users pyproject.toml constraints.txt README.md ./
COPY --chown=ray:users models ./models
COPY --chown=ray:users deployments ./deployments
COPY --chown=ray:users imaging ./imaging
COPY --chown=ray:users bgremove ./bgremove
RUN pip install -c constraints.txt .

COPY --chown=ray:users configs ./configs
COPY --chown=ray:users scripts ./scripts
COPY --chown=ray:users serve_config.yaml ./

# Model cache: mount a volume here so weights survive restarts.
USER root
RUN mkdir -p /models/u2net /models/huggingface && chown -R ray:users /models
USER ray
VOLUME ["/models"]

# Optional: bake U2-Net weights into the image for air-gapped clusters
# (U2NET_HOME inside the image; a mounted volume hides them, so mount elsewhere
# or leave /models unmounted when baking).
ARG BAKE_U2NET=""
RUN if [ -n "$BAKE_U2NET" ]; then python scripts/fetch_models.py --model "$BAKE_U2NET" --home /models/u2net; fi

EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=10s --start-period=180s --retries=3 \
  CMD python -c "import sys,urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/api/v1/health', timeout=8).status == 200 else 1)"

CMD ["serve", "run", "serve_config.yaml"]
