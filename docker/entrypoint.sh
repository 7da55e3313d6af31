#!/usr/bin/env bash
# The image's entry point: `demo [overrides]` runs the CPU demo (recipe/scripts/demo_cpu.sh: the CPU rows
# through verl's main_ppo, report, table); anything else is passed to the recipe CLI (python -m sspo.launch.cli).
# Outputs go to SSPO_OUTPUT_DIR (/outputs): a mounted folder must be writable by the container's uid.
set -euo pipefail
out=${SSPO_OUTPUT_DIR:-/outputs}
if [[ ! " $* " =~ " --dry-run " && ! " $* " =~ " --help " && ! -w $out ]]; then
    echo "entrypoint: $out is not writable by uid $(id -u): mount a folder you own and run with" \
         "--user \$(id -u):\$(id -g) (e.g. docker run --user \$(id -u):\$(id -g) -v \$PWD/outputs:$out ...)" >&2
    exit 2
fi
if [[ ${1:-} == demo ]]; then
    shift
    exec /opt/sspo/recipe/scripts/demo_cpu.sh "$@"
fi
exec python -m sspo.launch.cli "$@"
