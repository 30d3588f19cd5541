#!/bin/bash
# voprd instance bootstrap (Amazon Linux 2023): installs Python and voprd into its own virtual
# environment, writes /etc/default/voprd from the stack's values, installs and starts the unit.
#
# The EC2 user data writes the stack's values to /etc/voprd/stack.env, this script to
# /opt/voprd/bootstrap.sh and the unit to /opt/voprd/voprd.service, then runs this script.
# Idempotent: each step checks before it changes anything, so running it again is harmless.
#
#   sudo /opt/voprd/bootstrap.sh                 re-apply (installs nothing that is there)
#   sudo /opt/voprd/bootstrap.sh --update        upgrade voprd from VOPRD_SOURCE, restart
#   sudo /opt/voprd/bootstrap.sh --update --source voprd==0.2.0   switch source, upgrade
#   VOPRD_ROOT=/tmp/root bootstrap.sh --dry-run  write the files under /tmp/root only
set -euo pipefail

usage() {
  cat <<'EOF'
usage: bootstrap.sh [--update] [--source SPEC] [--dry-run]
  --update       upgrade voprd from its source (pip --upgrade) and restart the daemon
  --source SPEC  record a new source (pip requirement or git+https URL@ref) in stack.env
  --dry-run      write files only; no package installs, no pip, no systemctl
environment: VOPRD_ROOT  prefix for every path written (tests; default /)
EOF
}

root="${VOPRD_ROOT:-}"
dry_run=0
update=0
new_source=""
while [ "$#" -gt 0 ]; do
  case "$1" in
    --update) update=1 ;;
    --dry-run) dry_run=1 ;;
    --source)
      [ "$#" -ge 2 ] || { echo "bootstrap.sh: --source needs a value" >&2; exit 2; }
      new_source="$2"
      shift
      ;;
    -h | --help) usage; exit 0 ;;
    *) echo "bootstrap.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
stack_env="$root/etc/voprd/stack.env"
env_file="$root/etc/default/voprd"
unit_file="$root/etc/systemd/system/voprd.service"
prefix="$root/opt/voprd"
venv="$prefix/venv"
python_pkg="python3.11"

log() { echo "voprd-bootstrap: $*"; }

# Runs a command, or only says it would in a dry run.
run() {
  if [ "$dry_run" -eq 1 ]; then
    log "dry-run: would run: $*"
  else
    "$@"
  fi
}

# Installs $2 (a file with the wanted content) as $1 with mode $3, only if it differs.
install_if_changed() {
  local dest="$1" src="$2" mode="$3"
  if [ -f "$dest" ] && cmp -s "$src" "$dest"; then
    log "unchanged: ${dest#"$root"}"
    return 1
  fi
  install -D -m "$mode" "$src" "$dest"
  log "wrote: ${dest#"$root"}"
  return 0
}

# Reads KEY=VALUE lines literally (never sourced: the values are data, not shell).
declare -A stack=()
read_stack_env() {
  local key value
  [ -f "$stack_env" ] || { echo "bootstrap.sh: missing $stack_env (written by the user data)" >&2; exit 1; }
  while IFS= read -r line || [ -n "$line" ]; do
    case "$line" in '' | '#'*) continue ;; esac
    key="${line%%=*}"
    value="${line#*=}"
    stack["$key"]="$value"
  done <"$stack_env"
  for key in VOPRD_SOURCE VOPRD_SEED_START VOPRD_BUCKET VOPRD_SNS_TOPIC_ARN VOPRD_LOG_GROUP AWS_REGION; do
    [ -n "${stack[$key]:-}" ] || { echo "bootstrap.sh: $stack_env has no $key" >&2; exit 1; }
  done
  case "${stack[VOPRD_SEED_START]}" in
    *[!0-9]*) echo "bootstrap.sh: VOPRD_SEED_START must be a number" >&2; exit 1 ;;
  esac
}

# systemd EnvironmentFile syntax: double quotes, with \ " ` $ escaped.
quote_env() {
  local v="$1"
  v="${v//\\/\\\\}"
  v="${v//\"/\\\"}"
  v="${v//\`/\\\`}"
  v="${v//\$/\\\$}"
  printf '"%s"' "$v"
}

read_stack_env
if [ -n "$new_source" ]; then
  stack[VOPRD_SOURCE]="$new_source"
  tmp="$(mktemp)"
  grep -v '^VOPRD_SOURCE=' "$stack_env" >"$tmp" || true
  printf 'VOPRD_SOURCE=%s\n' "$new_source" >>"$tmp"
  install_if_changed "$stack_env" "$tmp" 0644 || true
  rm -f "$tmp"
fi
source_spec="${stack[VOPRD_SOURCE]}"

# 1. Python (and git for git+ sources) from the distribution's repositories.
packages=("$python_pkg" "$python_pkg-pip")
case "$source_spec" in git+*) packages+=(git) ;; esac
if [ "$dry_run" -eq 0 ] && rpm -q "${packages[@]}" >/dev/null 2>&1; then
  log "unchanged: packages ${packages[*]}"
else
  run dnf install -y -q "${packages[@]}"
fi

# 2. voprd in its own virtual environment.
if [ ! -x "$venv/bin/python" ]; then
  run "$python_pkg" -m venv "$venv"
fi
if [ "$update" -eq 1 ]; then
  run "$venv/bin/pip" install -q --upgrade pip
  run "$venv/bin/pip" install -q --upgrade "$source_spec"
elif [ ! -x "$venv/bin/voprd" ]; then
  run "$venv/bin/pip" install -q "$source_spec"
else
  log "unchanged: $venv/bin/voprd (use --update to upgrade)"
fi

# `voprd status`, `voprd --once ...` for operators on the instance (sudo -i or SSM shell).
link="$root/usr/local/bin/voprd"
if [ "$(readlink "$link" 2>/dev/null)" != "/opt/voprd/venv/bin/voprd" ]; then
  install -d -m 0755 "$root/usr/local/bin"
  ln -sfn /opt/voprd/venv/bin/voprd "$link"
  log "wrote: /usr/local/bin/voprd -> /opt/voprd/venv/bin/voprd"
fi

# 3. The daemon's environment, from the stack's values.
daemon_args="--seed ${stack[VOPRD_SEED_START]}"
if [ -n "${stack[VOPRD_EXTRA_ARGS]:-}" ]; then
  daemon_args="$daemon_args ${stack[VOPRD_EXTRA_ARGS]}"
fi
tmp="$(mktemp)"
{
  echo "# Written by /opt/voprd/bootstrap.sh from /etc/voprd/stack.env; edits are overwritten."
  echo "VOPRD_BUCKET=$(quote_env "${stack[VOPRD_BUCKET]}")"
  echo "VOPRD_SNS_TOPIC_ARN=$(quote_env "${stack[VOPRD_SNS_TOPIC_ARN]}")"
  echo "VOPRD_LOG_GROUP=$(quote_env "${stack[VOPRD_LOG_GROUP]}")"
  # The fleet run this instance joins (FleetSize > 1: every instance of the stack; 1: a fleet
  # of one). Absent in a stack.env written before the fleet existed: the daemon's default run.
  if [ -n "${stack[VOPRD_RUN]:-}" ]; then
    echo "VOPRD_RUN=$(quote_env "${stack[VOPRD_RUN]}")"
  fi
  echo "AWS_REGION=$(quote_env "${stack[AWS_REGION]}")"
  echo "VOPRD_ARGS=$(quote_env "$daemon_args")"
} >"$tmp"
env_changed=0
install_if_changed "$env_file" "$tmp" 0644 && env_changed=1
rm -f "$tmp"

# 4. The unit: next to this script on an instance, deploy/systemd/ in a source checkout.
unit_src="$script_dir/voprd.service"
[ -f "$unit_src" ] || unit_src="$script_dir/systemd/voprd.service"
[ -f "$unit_src" ] || { echo "bootstrap.sh: no voprd.service next to $0" >&2; exit 1; }
unit_changed=0
install_if_changed "$unit_file" "$unit_src" 0644 && unit_changed=1

# 5. Start (or restart when anything it runs with changed); a restart drains gracefully.
if [ "$unit_changed" -eq 1 ]; then
  run systemctl daemon-reload
fi
run systemctl enable voprd.service
if [ "$update" -eq 1 ] || [ "$env_changed" -eq 1 ] || [ "$unit_changed" -eq 1 ]; then
  run systemctl restart voprd.service
else
  run systemctl start voprd.service
fi
log "done"
