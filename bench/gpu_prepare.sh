#!/usr/bin/env bash
# Here, before a lease: what bench/gpu_device.sh carries, in the ignored folder .dev/ (read that script).
#
#   bash bench/gpu_prepare.sh            # wheels, parts, wrk, MNIST, fonts; the model repository to .dev/mr
#   bash bench/gpu_prepare.sh restore    # after the lease: the model repository back, tracked again
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = restore ]; then
    [ -d .dev/mr ] && [ ! -e service/model_repository ] && mv .dev/mr service/model_repository
    git reset -q service/model_repository && git status --short service/model_repository
    exit 0
fi
py=.venv/bin/python
mkdir -p .dev/svc .dev/bin .dev/lib .dev/mnist .dev/fonts /tmp/ortwheel
grep -qx '/.dev/' .git/info/exclude 2>/dev/null || echo '/.dev/' >> .git/info/exclude
plat=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
$py -m pip download -q --no-deps "${plat[@]}" -d /tmp/ortwheel onnxruntime-gpu==1.31.1
whl=$(ls /tmp/ortwheel/onnxruntime_gpu-1.31.1-*.whl)
(cd /tmp/ortwheel && sha256sum "$(basename "$whl")") > .dev/wheel.sha256
# Part sizes: each call carries the working tree too (3 MB once the model repository is out of it), under
# 64 MiB in all; the last part travels with the model repository and the wheels.
part() { dd if="$whl" of=".dev/p$1" bs=500000 skip="$2" count="$3" status=none; }
part 1 0 100 && part 2 100 127 && part 3 227 127 && part 4 354 127 && part 5 481 100
# fastapi 0.165 imports opentelemetry-api. pillow-heif (5.7 MB) stays behind for room: the service runs
# without it (HEIC uploads are then a 415).
$py -m pip download -q --no-deps "${plat[@]}" --platform manylinux_2_27_x86_64 -d .dev/svc \
    fastapi==0.165.0 starlette==1.10.0 uvicorn==0.55.0 httptools==0.9.0 orjson==3.13.0 opentelemetry-api==1.45.2 \
    pydantic==2.14.4 pydantic-core==2.50.5 pydantic-settings==2.16.3 python-dotenv==1.2.4 annotated-types==0.8.0 \
    typing-inspection==0.4.5 python-multipart==0.0.34 annotated-doc==0.0.7 typing-extensions==4.16.0 anyio==4.16.0
cp /usr/bin/wrk .dev/bin/ && cp /lib/x86_64-linux-gnu/libluajit-5.1.so.2 .dev/lib/
cp ../shared/data/mnist/* .dev/mnist/
cp /usr/share/fonts/opentype/urw-base35/*.otf .dev/fonts/
if [ -d service/model_repository ]; then
    git rm -r -q --cached service/model_repository && mv service/model_repository .dev/mr
fi
du -sb .dev/*
