# stn-serve: the spatial transformer service on onnxruntime-gpu, with the bundled model repository.
#
#   docker build -t stn-serve .
#   docker run --gpus all -p 8000:8000 stn-serve     # GPU (CUDA execution provider)
#   docker run -p 8000:8000 stn-serve                # no GPU: the same image serves on the CPU
#
# No CUDA base image: onnxruntime-gpu[cuda,cudnn] brings the CUDA runtime, cuBLAS, cuFFT, cuRAND, NVRTC
# and cuDNN as nvidia-* wheels, and the NVIDIA container toolkit mounts the driver (libcuda.so.1) at run
# time. The host needs the NVIDIA driver >= 580 (CUDA 13) for --gpus. No torch anywhere in the image.
# See docs/deploy.md.

# ---- builder: a wheel of the project and a virtual environment with the pinned runtime set ----------
FROM python:3.11-slim-bookworm AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src

# Dependencies first, in their own layer: it changes only when requirements/serve.txt does.
COPY requirements/serve.txt requirements/serve.txt
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --requirement requirements/serve.txt

# Then the project, without extras and without dependencies (they are all pinned above). The wheel
# carries service/model_repository as package data, so the bundled models travel inside the venv.
COPY pyproject.toml README.md ./
COPY service/ service/
RUN /opt/venv/bin/pip wheel --no-cache-dir --no-deps --wheel-dir /tmp/dist . \
    && /opt/venv/bin/pip install --no-cache-dir --no-deps /tmp/dist/*.whl \
    && /opt/venv/bin/pip check \
    && /opt/venv/bin/python -c "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is not None)"

# ---- runtime: python slim + the venv; nothing to compile, no CUDA toolkit, no torch ----------------
FROM python:3.11-slim-bookworm AS runtime

# The CUDA/cuDNN wheels' libraries are not on the loader path by themselves (onnxruntime's CUDA provider
# has no RPATH to them), so LD_LIBRARY_PATH names them. Without a GPU they are never loaded.
ENV PATH=/opt/venv/bin:$PATH \
    LD_LIBRARY_PATH=/opt/venv/lib/python3.11/site-packages/nvidia/cu13/lib:/opt/venv/lib/python3.11/site-packages/nvidia/cudnn/lib \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    STN_HOST=0.0.0.0 \
    STN_PORT=8000 \
    STN_PROVIDER=auto \
    STN_LOG_FORMAT=json

RUN useradd --system --no-log-init --uid 10001 --user-group --home-dir /nonexistent \
        --shell /usr/sbin/nologin stn

COPY --from=builder /opt/venv /opt/venv
COPY deploy/healthcheck.py /opt/stn/healthcheck.py

USER 10001:10001
WORKDIR /tmp

EXPOSE 8000

# Ready means every model is loaded and warmed (/v2/health/ready answers 503 until then). The check is
# a few lines of Python with urllib, so the image needs no curl.
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "/opt/stn/healthcheck.py"]

# SIGTERM (docker stop, Kubernetes) drains in-flight requests; give it time: docker stop -t 35.
STOPSIGNAL SIGTERM

# The same entry point as the README's `make serve`. Flags after the image name go to stn-serve,
# e.g. `docker run IMAGE --workers 2`; everything else is an STN_ environment variable.
ENTRYPOINT ["stn-serve"]
