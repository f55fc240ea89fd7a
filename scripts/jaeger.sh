#!/usr/bin/env bash
# Pinned, cached local Jaeger (v1.76.0, "v2" OTel-collector-based binary).
#
# Usage: scripts/jaeger.sh {build|start|stop|status|ui-assets}
#
#   build   Build the binary once into the cache dir (reused if present) and
#           print its path on stdout.
#   start   Build if missing, start in the background with
#           tools/jaeger/config.yaml (embedded Badger storage in a state
#           directory, so traces survive a restart; loopback only), and wait
#           until the health check and the query API answer. No-op if our
#           instance is already running and healthy.
#   stop    Stop the instance recorded in the pid file.
#   status  Print state; exit 0 if running and healthy, 1 otherwise.
#   ui-assets  Print the folder of the Jaeger UI named by GUARDED_JAEGER_UI (unpacking a
#           tarball into the cache once); exit 1 when none is given or found.
#
# Endpoints (all 127.0.0.1): OTLP gRPC 4317, OTLP HTTP 4318 (/v1/traces),
# query UI/API 16686 (/api/services, /api/traces?service=NAME), query gRPC
# 16685, health http://127.0.0.1:13133/status.
#
# Environment:
#   GUARDED_SERVING_CACHE  cache root (default: $HOME/.cache/guarded-serving)
#   GO                     go binary (default: `go` on PATH, else /usr/local/go/bin/go)
#   JAEGER_BUILD_JOBS      go build -p value (default: nproc, max 4)
#   JAEGER_START_TIMEOUT   seconds to wait for readiness on start (default: 60)
#   JAEGER_STORAGE         badger (default: persistent) or memory (tools/jaeger/config-memory.yaml)
#   JAEGER_BADGER_DIR      Badger's state directory (default: $GUARDED_SERVING_CACHE/jaeger-v1.76.0/badger);
#                          delete it (while stopped) to forget every trace
#   GUARDED_JAEGER_UI  the built Jaeger UI to serve on 16686: a folder holding index.html and
#           static/, a .tar.gz of one, or a folder holding such a tarball (CI and the tests use
#           ../shared/jaeger-ui/). Unset: Jaeger built from the Go module serves only a
#           placeholder page (its release binaries and images embed the UI; see docs/jaeger.md).
set -euo pipefail

JAEGER_VERSION="v1.76.0"
JAEGER_PKG="github.com/jaegertracing/jaeger/cmd/jaeger"

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "${SCRIPT_DIR}/.." && pwd)"
TOOL_DIR="${REPO_ROOT}/tools/jaeger"
case "${JAEGER_STORAGE:-badger}" in
    badger) CONFIG="${TOOL_DIR}/config.yaml" ;;
    memory) CONFIG="${TOOL_DIR}/config-memory.yaml" ;;
    *) echo "jaeger.sh: error: JAEGER_STORAGE=${JAEGER_STORAGE} (expected badger or memory)" >&2; exit 2 ;;
esac

CACHE_ROOT="${GUARDED_SERVING_CACHE:-${HOME}/.cache/guarded-serving}"
JAEGER_DIR="${CACHE_ROOT}/jaeger-${JAEGER_VERSION}"
JAEGER_BIN="${JAEGER_DIR}/jaeger"
PID_FILE="${JAEGER_DIR}/jaeger.pid"
LOG_FILE="${JAEGER_DIR}/jaeger.log"
export JAEGER_BADGER_DIR="${JAEGER_BADGER_DIR:-${JAEGER_DIR}/badger}"

HEALTH_URL="http://127.0.0.1:13133/status"
QUERY_URL="http://127.0.0.1:16686/api/services"
START_TIMEOUT="${JAEGER_START_TIMEOUT:-60}"

log() { echo "jaeger.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

find_go() {
    if [[ -n "${GO:-}" ]]; then
        echo "${GO}"
    elif command -v go >/dev/null 2>&1; then
        command -v go
    elif [[ -x /usr/local/go/bin/go ]]; then
        echo /usr/local/go/bin/go
    else
        die "go toolchain not found (set GO=/path/to/go)"
    fi
}

# The UI assets folder for GUARDED_JAEGER_UI (empty when unset); dies when it names nothing usable.
ui_assets() {
    local src="${GUARDED_JAEGER_UI:-}" tarball="" dest
    [[ -n "${src}" ]] || return 0
    if [[ -d "${src}" && -f "${src}/index.html" ]]; then
        (cd "${src}" && pwd)
        return 0
    fi
    if [[ -d "${src}" ]]; then
        tarball="$(ls -1 "${src}"/jaeger-ui-*.tar.gz 2>/dev/null | sort | tail -n 1 || true)"
    elif [[ -f "${src}" && "${src}" == *.tar.gz ]]; then
        tarball="${src}"
    fi
    [[ -n "${tarball}" ]] || die "GUARDED_JAEGER_UI=${src}: neither a folder with index.html nor a jaeger-ui tarball"
    dest="${JAEGER_DIR}/ui/$(basename "${tarball}" .tar.gz)"
    if [[ ! -f "${dest}/index.html" ]]; then
        mkdir -p "${dest}.tmp.$$"
        tar -xzf "${tarball}" -C "${dest}.tmp.$$" || { rm -rf "${dest}.tmp.$$"; die "cannot unpack ${tarball}"; }
        [[ -f "${dest}.tmp.$$/index.html" ]] || { rm -rf "${dest}.tmp.$$"; die "${tarball} holds no index.html"; }
        rm -rf "${dest}"
        mv "${dest}.tmp.$$" "${dest}"
    fi
    echo "${dest}"
}

cmd_ui_assets() {
    local dir
    dir="$(ui_assets)"
    [[ -n "${dir}" ]] || die "GUARDED_JAEGER_UI is not set"
    echo "${dir}"
}

cmd_build() {
    if [[ -x "${JAEGER_BIN}" ]]; then
        echo "${JAEGER_BIN}"
        return 0
    fi
    mkdir -p "${JAEGER_DIR}"
    # Serialize concurrent builds.
    exec 9>"${JAEGER_DIR}/.build.lock"
    flock 9
    if [[ ! -x "${JAEGER_BIN}" ]]; then
        local go jobs tmp start
        go="$(find_go)"
        jobs="${JAEGER_BUILD_JOBS:-$(nproc 2>/dev/null || echo 2)}"
        if ((jobs > 4)); then jobs=4; fi
        tmp="${JAEGER_BIN}.tmp.$$"
        start=$(date +%s)
        log "building jaeger ${JAEGER_VERSION} with $(${go} version) (-p ${jobs}); first build takes several minutes..."
        # Build from inside the tool module so its go.mod (which pins jaeger and
        # carries jaeger's own replace directive) is used.
        if ! (cd "${TOOL_DIR}" && "${go}" build -p "${jobs}" -trimpath -o "${tmp}" "${JAEGER_PKG}"); then
            rm -f "${tmp}"
            die "go build failed"
        fi
        mv -f "${tmp}" "${JAEGER_BIN}"
        log "built ${JAEGER_BIN} in $(($(date +%s) - start))s"
    fi
    exec 9>&-
    echo "${JAEGER_BIN}"
}

# Prints the pid recorded in the pid file if that process is alive and is our
# binary; otherwise prints nothing (and removes a stale pid file).
running_pid() {
    [[ -f "${PID_FILE}" ]] || return 0
    local pid
    pid="$(cat "${PID_FILE}" 2>/dev/null || true)"
    if [[ "${pid}" =~ ^[0-9]+$ ]] && kill -0 "${pid}" 2>/dev/null &&
        tr '\0' ' ' <"/proc/${pid}/cmdline" 2>/dev/null | grep -qF "${JAEGER_BIN}"; then
        echo "${pid}"
    else
        rm -f "${PID_FILE}"
    fi
}

healthy() {
    curl -fsS -o /dev/null --max-time 2 "${HEALTH_URL}" 2>/dev/null &&
        curl -fsS -o /dev/null --max-time 2 "${QUERY_URL}" 2>/dev/null
}

log_tail() {
    if [[ -f "${LOG_FILE}" ]]; then
        log "last lines of ${LOG_FILE}:"
        tail -n 40 "${LOG_FILE}" >&2 || true
    fi
}

cmd_start() {
    local pid
    pid="$(running_pid)"
    if [[ -n "${pid}" ]]; then
        if healthy; then
            log "already running (pid ${pid})"
            return 0
        fi
        # Running but not (yet) healthy: give it the normal wait below.
    else
        if healthy; then
            die "something else already serves ${HEALTH_URL} and ${QUERY_URL} (not started by this script)"
        fi
        cmd_build >/dev/null
        mkdir -p "${JAEGER_DIR}" "${JAEGER_BADGER_DIR}/keys" "${JAEGER_BADGER_DIR}/values"
        local ui extra=()
        ui="$(ui_assets)"
        if [[ -n "${ui}" ]]; then
            extra=("--set=extensions.jaeger_query.ui.assets_path=${ui}")
            log "serving the Jaeger UI from ${ui}"
        else
            log "GUARDED_JAEGER_UI not set: http://127.0.0.1:16686 shows Jaeger's placeholder page (the API works)"
        fi
        {
            echo "=== $(date -u +%Y-%m-%dT%H:%M:%SZ) starting ${JAEGER_BIN} --config ${CONFIG} ${extra[*]} (storage ${JAEGER_STORAGE:-badger}$([[ "${JAEGER_STORAGE:-badger}" == badger ]] && echo " in ${JAEGER_BADGER_DIR}"))"
        } >>"${LOG_FILE}"
        # setsid: detach from the caller's process group / terminal.
        setsid "${JAEGER_BIN}" --config "${CONFIG}" "${extra[@]}" </dev/null >>"${LOG_FILE}" 2>&1 &
        pid=$!
        echo "${pid}" >"${PID_FILE}"
        log "started pid ${pid}, log ${LOG_FILE}"
    fi

    local deadline=$((SECONDS + START_TIMEOUT))
    while ((SECONDS < deadline)); do
        if ! kill -0 "${pid}" 2>/dev/null; then
            rm -f "${PID_FILE}"
            log "jaeger exited during startup"
            log_tail
            exit 1
        fi
        if healthy; then
            log "ready: health ${HEALTH_URL}, query http://127.0.0.1:16686, OTLP 127.0.0.1:4317 (gRPC) / 127.0.0.1:4318 (HTTP)"
            return 0
        fi
        sleep 0.5
    done
    log "jaeger (pid ${pid}) not ready after ${START_TIMEOUT}s"
    log_tail
    exit 1
}

cmd_stop() {
    local pid
    pid="$(running_pid)"
    if [[ -z "${pid}" ]]; then
        log "not running"
        return 0
    fi
    kill -TERM "${pid}" 2>/dev/null || true
    local i
    for ((i = 0; i < 100; i++)); do
        kill -0 "${pid}" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "${pid}" 2>/dev/null; then
        log "pid ${pid} did not exit after SIGTERM; sending SIGKILL"
        kill -KILL "${pid}" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            kill -0 "${pid}" 2>/dev/null || break
            sleep 0.1
        done
    fi
    rm -f "${PID_FILE}"
    log "stopped pid ${pid}"
}

cmd_status() {
    local pid
    pid="$(running_pid)"
    if [[ -z "${pid}" ]]; then
        echo "jaeger ${JAEGER_VERSION}: not running (binary: $([[ -x "${JAEGER_BIN}" ]] && echo "${JAEGER_BIN}" || echo "not built"))"
        return 1
    fi
    if healthy; then
        echo "jaeger ${JAEGER_VERSION}: running, healthy (pid ${pid}, log ${LOG_FILE})"
        return 0
    fi
    echo "jaeger ${JAEGER_VERSION}: running, NOT healthy (pid ${pid}, log ${LOG_FILE})"
    return 1
}

case "${1:-}" in
    build) cmd_build ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    ui-assets) cmd_ui_assets ;;
    *)
        echo "usage: $0 {build|start|stop|status|ui-assets}" >&2
        exit 2
        ;;
esac
