# Sourced (not run) by recipe/cpu/install.sh and recipe/gpu/lock.sh: pip's wheel sources handed to uv, which
# reads no pip.conf, so that uv finds what pip would on this machine. Needs PY: a Python that has pip.
#   source recipe/uv-from-pip.sh; uv_env_from_pip
# Handed on (each only where its UV_* variable is unset): find-links, index-url, extra-index-url, constraint
# (UV_FIND_LINKS, UV_INDEX_URL, UV_EXTRA_INDEX_URL, UV_CONSTRAINT) and cert (SSL_CERT_FILE); no other pip setting.

# pip's setting $1 for uv: the environment (PIP_*) first, then pip.conf's [install], then [global] (read through
# `pip config list`, which any pip prints; whitespace-separated values come back space-separated, trimmed)
pip_setting() {
    local env="PIP_$(tr a-z- A-Z_ <<<"$1")"
    if [[ -n "${!env:-}" ]]; then local parts; read -ra parts <<<"${!env//$'\n'/ }"; echo "${parts[*]}"; return; fi
    "$PY" -m pip config list 2>/dev/null | "$PY" -c '
import ast, sys
found = {}
for line in sys.stdin:
    name, _, value = line.rstrip("\n").partition("=")
    section, _, key = name.partition(".")
    if key == sys.argv[1] and section in ("install", "global") and value:
        found[section] = " ".join(str(ast.literal_eval(value)).split())
print(found.get("install", found.get("global", "")))' "$1"
}

# export pip's wheel sources as uv's settings, and pip's choice among indexes (the best version anywhere), not
# uv's default (the first index that has the name)
uv_env_from_pip() {
    local links index extra constraint cert
    links=$(pip_setting find-links) index=$(pip_setting index-url) extra=$(pip_setting extra-index-url)
    constraint=$(pip_setting constraint) cert=$(pip_setting cert)
    if [[ -n "$links" ]]; then export UV_FIND_LINKS="${UV_FIND_LINKS:-${links// /,}}"; fi
    if [[ -n "$index" ]]; then export UV_INDEX_URL="${UV_INDEX_URL:-$index}"; fi
    if [[ -n "$extra" ]]; then export UV_EXTRA_INDEX_URL="${UV_EXTRA_INDEX_URL:-$extra}"; fi
    if [[ -n "$constraint" ]]; then export UV_CONSTRAINT="${UV_CONSTRAINT:-$constraint}"; fi
    if [[ -f "$cert" ]]; then export SSL_CERT_FILE="${SSL_CERT_FILE:-$cert}"; fi
    export UV_INDEX_STRATEGY="${UV_INDEX_STRATEGY:-unsafe-best-match}"
}
