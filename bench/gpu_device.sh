#!/usr/bin/env bash
# One lease of a lent GPU machine (the workplace's `device` tool), in a few calls made in quick succession.
# That machine has python3 with CUDA torch but only the CPU build of onnxruntime, no fonts and no registry:
# the onnxruntime-gpu wheel (255 MB, over one call's 64 MiB) travels in five parts, the service's small
# dependencies as wheels, wrk as a binary, MNIST and the photo fonts as files. bench/gpu_prepare.sh puts
# all of it in the ignored folder .dev/ and moves the model repository (40 MB, tracked) there too, out of
# git's index, so that the part calls carry only 3 MB of working tree; `bash bench/gpu_prepare.sh restore`
# puts it back. The machine goes back 30 s after a call ends: make the six calls back to back.
#
#   bash bench/gpu_device.sh part 1        carry .dev/p1 .dev/mnist   (then parts 2, 3, 4: .dev/pN alone)
#   bash bench/gpu_device.sh final         carry .dev/p5 .dev/svc .dev/bin .dev/lib .dev/wheel.sha256 .dev/mr
#                                                .dev/fonts
#   (steps already done on a warm machine are skipped: a second `final` needs no .dev/p5)
#
# `final` joins and checks the wheel, installs everything under /tmp/site, then runs bench/gpu_placement.py
# (skip it with SKIP_PLACEMENT=1) and bench/bench_service.py with provider cuda and, on the same machine in
# the same call, provider cpu. Everything lands in $OUT; commit it under bench/results/.
#
# Seen on the lease of 2026-12-04: placement PASS on all eight models and their seven FP16 twins; the CUDA service run was lost to the
# photo stage (no fonts there; since then the photo stage failing keeps the PNG levels, and the fonts travel).
set -uo pipefail
PARTS=/tmp/ortparts

case "${1:?part N | final}" in
part)
    [ -d .dev/mnist ] && mkdir -p /tmp/mnist && cp .dev/mnist/* /tmp/mnist/
    mkdir -p "$PARTS" && mv ".dev/p$2" "$PARTS/" && ls -l "$PARTS"
    ;;
final)
    [ -d .dev/mr ] && mkdir -p service/model_repository && cp -a .dev/mr/. service/model_repository/
    [ -d .dev/fonts ] && mkdir -p /usr/share/fonts/opentype/urw-base35 \
        && cp .dev/fonts/* /usr/share/fonts/opentype/urw-base35/
    [ -f .dev/p5 ] && mkdir -p "$PARTS" && mv .dev/p5 "$PARTS/"
    if [ ! -d /tmp/site/onnxruntime ]; then
        whl=/tmp/$(awk '{print $2}' .dev/wheel.sha256)  # the wheel's name, as gpu_prepare.sh downloaded it
        cat "$PARTS"/p{1..5} > "$whl"
        (cd /tmp && sha256sum -c "$OLDPWD/.dev/wheel.sha256") || exit 1
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
            "$whl" .dev/svc/*.whl || exit 1
    fi
    export PYTHONPATH=/tmp/site:$PWD PATH=$PWD/.dev/bin:$PATH LD_LIBRARY_PATH=$PWD/.dev/lib:${LD_LIBRARY_PATH:-}
    site=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    # onnxruntime's CUDA provider needs CUDA 13 and cuDNN 9: the nvidia-* packages beside torch there.
    LD_LIBRARY_PATH=$(find "$site/nvidia" -name 'lib*.so*' -printf '%h\n' | sort -u | tr '\n' ':')$LD_LIBRARY_PATH
    export LD_LIBRARY_PATH STN_DATA_DIR=/tmp/mnist
    python3 -c 'import onnxruntime as o; print(o.__version__, o.__file__, o.get_available_providers())'
    wrk -v | head -n 1
    if [ -z "${SKIP_PLACEMENT:-}" ]; then
        python3 -m bench.gpu_placement --out "$OUT/gpu_placement" 2>&1 | tail -n 60
        echo "gpu_placement rc=${PIPESTATUS[0]}"
    fi
    python3 -m bench.bench_service --set provider=cuda --duration 4 --warmup 1 --ort-seconds 1.5 \
        --photo-sizes 1600x1200 --photo-files 4 --out "$OUT" --tag h200_cuda 2>&1 | tail -n 40
    echo "bench cuda rc=${PIPESTATUS[0]}"
    python3 -m bench.bench_service --set provider=cpu --duration 4 --warmup 1 --ort-seconds 1.5 --no-photos \
        --concurrency 1,64 --out "$OUT" --tag h200_cpu 2>&1 | tail -n 25
    echo "bench cpu rc=${PIPESTATUS[0]}"
    ;;
esac
