#!/usr/bin/env bash
# Benchmark on the device machine (see ../shared/gpu-browser/README.md): after the three
# staging calls, run with carry [".gpu/p3", "dist", ".gpu/pylib"] where dist/ is a built
# site without models and .gpu/pylib holds the pure-Python gguf, tqdm and yaml packages
# (the device has Python and numpy but no package index). Writes $OUT/<preset>.json.
# BENCH_ARGS adds bench options, e.g. "--layers 2 --expert-fraction 0.25" for a MoE preset.
set -euo pipefail
export PYTHONPATH="$PWD/py:$PWD/.gpu/pylib:$PWD"
for preset in ${BENCH_PRESETS:-smollm2-135m gemma-3-1b}; do
  python3 build.py bench --no-build --browser /opt/gpubrowser/chrome --model "$preset" \
    --prompt-tokens "${BENCH_PROMPT:-512}" --decode-tokens "${BENCH_DECODE:-128}" \
    --timeout "${BENCH_TIMEOUT:-240}" --out "$OUT/$preset.json" ${BENCH_ARGS:-} > /dev/null \
    || echo "{\"preset\": \"$preset\", \"error\": \"bench failed\"}" > "$OUT/$preset.json"
  python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(sys.argv[2], {k: r.get(k) for k in ('loadMs','coldTtftMs','ttftMs','prefillTokPerS','prefillCpuMs','decodeTokPerS','cpuMsPerToken','dispatchesPerToken','weightBytesPerSecond','error')})" "$OUT/$preset.json" "$preset"
done
